"""The decorator tests use the chat operator's fixtures."""

from __future__ import annotations

from tests.operators.conftest import emulator

__all__ = ["emulator"]
