"""Operators of the OpenRouter provider (import each from its module)."""
