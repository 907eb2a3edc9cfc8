"""What the sub-commands share: default model names and the CLI error type."""

from __future__ import annotations

DEFAULT_SPEECHLM = "wcy1122/MGM-Omni-TTS-2B-0927"
DEFAULT_MLLM = "wcy1122/MGM-Omni-7B"
TINY_MODEL = "tiny-random"
OWN_MOUTH = "own-small"  # the small mouth trained here, shipped in the package (mgm_omni/hub/own_mouth_shipped.py)
MOUTH_DEFAULT_HELP = (f"default: {DEFAULT_SPEECHLM} if in the local hub cache, else the shipped '{OWN_MOUTH}' "
                      f"mouth; '{TINY_MODEL}' is the built-in random model for tests")


class CLIError(RuntimeError):
    """A user-facing failure: printed as one line, exit status 2."""
