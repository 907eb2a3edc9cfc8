"""Exceptions raised by the text front-end."""

from __future__ import annotations


class TextError(ValueError):
    """Bad text input: wrong type, empty where text is required, a forbidden literal."""


class TokenizerError(TextError):
    """A tokenizer cannot be loaded, lacks a required token, or was given invalid ids."""


class PromptError(TextError):
    """A chat prompt cannot be built from the given pieces."""
