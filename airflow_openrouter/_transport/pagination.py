"""Reading a finished batch's results page by page: the decisions of the loop, without its I/O.

The hook's ``iter_batch_results`` and ``aiter_batch_results`` both drive one :class:`ResultsPager`:
ask it for the next call, send it, hand it the page, yield the rows it returns. The pager stops with
:class:`OpenRouterPaginationError` as soon as the pages cannot be right, instead of looping or silently
stopping short:

* a cursor that came back before (a loop: A, B, A, ... or the same cursor again);
* ``has_more: true`` without a ``next_cursor`` (the rest would be silently missing);
* more rows than the batch has (``expected_rows``, from its ``request_counts.total``, when the caller
  knows it; otherwise :data:`MAX_RESULT_ROWS`);
* :data:`MAX_EMPTY_PAGES` pages in a row that bring no rows but say there are more.

Where ``GET /batches/{id}/results`` is not served (404 on the first page), the rows come from the inline
``results`` of ``GET /batches/{id}``.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from airflow_openrouter._transport.calls import Call, results_page_call
from airflow_openrouter.exceptions import OpenRouterNotFoundError, OpenRouterPaginationError
from airflow_openrouter.types import Batch, BatchResult, BatchResultsPage

__all__ = ["MAX_EMPTY_PAGES", "MAX_RESULT_ROWS", "ResultsPager"]

log = logging.getLogger("airflow_openrouter.transport")

#: Rows a batch can have, when the caller does not say: 20 times the documented limit of 5,000 requests.
MAX_RESULT_ROWS = 100_000
#: Pages in a row that carry no rows but ``has_more: true``.
MAX_EMPTY_PAGES = 3


class ResultsPager:
    """Where the reading of one batch's results stands, and whether the pages add up."""

    def __init__(self, batch_id: str, page_size: int, expected_rows: int | None = None) -> None:
        self.batch_id = batch_id
        self.page_size = page_size
        self.expected_rows = expected_rows
        self.rows = 0
        self.pages = 0
        self.done = False
        self._cursor: str | None = None
        self._seen_cursors: set[str] = set()
        self._empty_in_a_row = 0
        self._problem: str | None = None

    def next_call(self) -> Call[BatchResultsPage] | None:
        """The call for the next page, or ``None`` when every row has been read; raises when the last
        page made the next one impossible (its rows were yielded: they are the batch's)."""
        if self._problem is not None:
            self._fail(self._problem)
        if self.done:
            return None
        return results_page_call(self.batch_id, self._cursor, self.page_size)

    def accept(self, page: BatchResultsPage) -> list[BatchResult]:
        """The rows of the page just read; raises at once when they are more than the batch has."""
        self.pages += 1
        limit = self.expected_rows if self.expected_rows is not None else MAX_RESULT_ROWS
        if self.rows + len(page.data) > limit:
            what = f"the batch has {limit}" if self.expected_rows is not None else f"the cap is {limit:,}"
            self._fail(f"page {self.pages} would bring them to {self.rows + len(page.data)}, but {what}")
        self.rows += len(page.data)
        self._empty_in_a_row = 0 if page.data else self._empty_in_a_row + 1
        cursor = page.next_cursor
        if not page.has_more:
            self.done = True
        elif not cursor:
            self._problem = f"page {self.pages} says has_more but gives no next_cursor"
        elif cursor in self._seen_cursors:
            self._problem = f"page {self.pages} gives cursor {cursor!r} again (seen on an earlier page)"
        elif self._empty_in_a_row >= MAX_EMPTY_PAGES:
            self._problem = f"{MAX_EMPTY_PAGES} pages in a row brought no rows but said has_more"
        else:
            self._seen_cursors.add(cursor)
            self._cursor = cursor
        return page.data

    def check_fallback(self, error: OpenRouterNotFoundError) -> None:
        """On a 404: re-raise ``error`` unless it answered the first page (the endpoint is not served)."""
        if self.pages or self._cursor is not None:
            raise error
        log.info(
            "GET /batches/%s/results is not served here; reading the batch's inline results.", self.batch_id
        )

    def inline_rows(self, batch: Batch) -> list[BatchResult]:
        """The rows inlined in ``GET /batches/{id}`` (after :meth:`check_fallback`)."""
        self.done = True
        return batch.results or []

    def _fail(self, problem: str) -> NoReturn:
        raise OpenRouterPaginationError(
            f"The results of batch {self.batch_id} do not add up after {self.rows} rows: {problem}. "
            "OpenRouter keeps the results and reading them costs nothing: try again later (a retried task "
            "reads them again from the first page)."
        )
