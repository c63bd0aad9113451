"""Results pages that do not add up stop with a clear error instead of looping or stopping short
(scripted server: the emulator's pages are always right)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_openrouter._transport import pagination
from airflow_openrouter.exceptions import OpenRouterPaginationError
from tests.transport.conftest import Exchange


def rows(first: int, count: int) -> list[dict]:
    return [
        {"custom_id": f"r{i}", "response": {"status_code": 200, "body": {}}}
        for i in range(first, first + count)
    ]


def pages(script):
    """A server answering ``GET /batches/b1/results?cursor=...`` with ``script(page_number, cursor)``."""

    def serve(exchange: Exchange) -> None:
        cursor = parse_qs(urlsplit(exchange.path).query).get("cursor", [None])[0]
        exchange.send_json(script(len(exchange.server.requests), cursor))

    return serve


def read_all(hook, mode: str, **kwargs) -> tuple[list[str], str]:
    """The custom ids read (sync or async) before the pagination error, and the error's text."""
    seen: list[str] = []

    async def run():
        async with hook:
            async for row in hook.aiter_batch_results("b1", **kwargs):
                seen.append(row.custom_id)

    with pytest.raises(OpenRouterPaginationError) as info:
        if mode == "sync":
            seen.extend(row.custom_id for row in hook.iter_batch_results("b1", **kwargs))
        else:
            asyncio.run(run())
    return seen, str(info.value)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
def test_a_page_that_gives_its_own_cursor_again_stops_instead_of_looping(server, server_hook, mode):
    server.script = pages(lambda n, cursor: {"data": rows(0, 2), "has_more": True, "next_cursor": "c1"})

    seen, error = read_all(server_hook(), mode)

    assert "gives cursor 'c1' again" in error and "batch b1" in error
    assert len(server.requests) == 2 and seen == ["r0", "r1", "r0", "r1"]


@MODES
def test_cursors_going_round_in_a_circle_stop(server, server_hook, mode):
    following = {None: "a", "a": "b", "b": "a"}
    server.script = pages(
        lambda n, cursor: {"data": rows(n, 1), "has_more": True, "next_cursor": following[cursor]}
    )

    _, error = read_all(server_hook(), mode)

    assert "gives cursor 'a' again" in error and len(server.requests) == 3


@MODES
def test_has_more_without_a_cursor_is_an_error_not_the_end(server, server_hook, mode):
    server.script = pages(lambda n, cursor: {"data": rows(0, 3), "has_more": True, "next_cursor": None})

    seen, error = read_all(server_hook(), mode)

    assert "has_more but gives no next_cursor" in error and seen == ["r0", "r1", "r2"]


@MODES
def test_more_rows_than_the_batch_has_is_an_error(server, server_hook, mode):
    server.script = pages(
        lambda n, cursor: {"data": rows(n * 4, 4), "has_more": True, "next_cursor": f"c{n}"}
    )

    seen, error = read_all(server_hook(), mode, expected_rows=10)

    assert "after 8 rows: page 3 would bring them to 12, but the batch has 10" in error
    assert len(server.requests) == 3 and len(seen) == 8, "rows past the impossible page are not yielded"


@MODES
def test_without_a_known_size_the_rows_are_capped(server, server_hook, mode, monkeypatch):
    monkeypatch.setattr(pagination, "MAX_RESULT_ROWS", 50)
    server.script = pages(
        lambda n, cursor: {"data": rows(n * 10, 10), "has_more": True, "next_cursor": f"c{n}"}
    )

    seen, error = read_all(server_hook(), mode)

    assert "the cap is 50" in error and len(server.requests) == 6 and len(seen) == 50


@MODES
def test_pages_that_bring_nothing_but_say_there_is_more_stop(server, server_hook, mode):
    server.script = pages(lambda n, cursor: {"data": [], "has_more": True, "next_cursor": f"c{n}"})

    _, error = read_all(server_hook(), mode)

    assert "3 pages in a row brought no rows" in error and len(server.requests) == 3


def test_pages_that_add_up_are_all_read_and_the_last_one_ends_it(server, server_hook):
    def script(n, cursor):
        return {"data": rows((n - 1) * 2, 2), "has_more": n < 3, "next_cursor": f"c{n}" if n < 3 else None}

    server.script = pages(script)
    got = [row.custom_id for row in server_hook().iter_batch_results("b1", expected_rows=6)]

    assert got == [f"r{i}" for i in range(6)]
    assert [path.split("?")[1] for _, path in server.requests] == [
        "limit=500",
        "limit=500&cursor=c1",
        "limit=500&cursor=c2",
    ]
