"""Fixtures for the emulator's own tests: a fresh emulator, an authenticated client, the OpenAPI specs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from airflow_openrouter.testing import OpenRouterEmulator

SPEC_DIR = Path(__file__).parent / "spec"
_BASE = "https://spec.invalid/"
MAIN_SPEC = "openrouter-openapi.yaml"
BATCH_SPEC = "openrouter-batch-openapi.yaml"


@pytest.fixture(scope="module")
def _module_emulator() -> Iterator[OpenRouterEmulator]:
    with OpenRouterEmulator(manual_clock=True) as emulator:
        yield emulator


@pytest.fixture
def emu(_module_emulator: OpenRouterEmulator) -> OpenRouterEmulator:
    """A pristine emulator on a manual clock: batches move only when the test calls advance().

    One server per module, reset before each test: uvicorn needs ~0.15 s to shut down, which adds
    up over a hundred tests.
    """
    _module_emulator.reset()
    return _module_emulator


@pytest.fixture
def client(emu: OpenRouterEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def checked_client(emu: OpenRouterEmulator) -> Iterator[httpx.Client]:
    """The authenticated client, with every JSON answer checked against the official SDKs' models."""
    from . import sdk_oracle

    headers = {"Authorization": f"Bearer {emu.api_key}"}
    hooks = {"response": [sdk_oracle.check_response]}
    with httpx.Client(base_url=emu.base_url, headers=headers, timeout=30, event_hooks=hooks) as http:
        yield http


class OpenApi:
    """Validates instances against components/schemas of the two spec files (cross-file $refs resolve)."""

    def __init__(self) -> None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        registry: Registry = Registry()
        for name in (MAIN_SPEC, BATCH_SPEC):
            document = yaml.load((SPEC_DIR / name).read_text(), Loader=loader)
            registry = registry.with_resource(
                _BASE + name, Resource(contents=document, specification=DRAFT202012)
            )
        self._registry = registry
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}

    def errors(self, schema: str, instance: Any, spec: str = MAIN_SPEC) -> list[str]:
        """``schema`` is a components/schemas name, or a JSON pointer ("#/paths/...") for inline schemas."""
        key = (spec, schema)
        if key not in self._validators:
            pointer = schema if schema.startswith("#/") else f"#/components/schemas/{schema}"
            ref = {"$ref": f"{_BASE}{spec}{pointer}"}
            self._validators[key] = Draft202012Validator(ref, registry=self._registry)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in self._validators[key].iter_errors(instance)
        ]

    def assert_valid(self, schema: str, instance: Any, spec: str = MAIN_SPEC) -> None:
        errors = self.errors(schema, instance, spec)
        assert not errors, f"{schema} violations:\n" + "\n".join(errors[:20])


@pytest.fixture(scope="session")
def openapi() -> OpenApi:
    return OpenApi()
