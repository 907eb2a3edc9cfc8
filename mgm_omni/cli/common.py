"""What the sub-commands share: default model names and the CLI error type."""

from __future__ import annotations

DEFAULT_SPEECHLM = "wcy1122/MGM-Omni-TTS-2B-0927"
DEFAULT_MLLM = "wcy1122/MGM-Omni-7B"
TINY_MODEL = "tiny-random"


class CLIError(RuntimeError):
    """A user-facing failure: printed as one line, exit status 2."""
