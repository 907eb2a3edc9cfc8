"""Voice names ignore case, and OpenAI's voice names reach the documented presets (a registered voice wins)."""

from __future__ import annotations

import pytest

from mgm_omni.engine.voices import VoiceExists
from mgm_omni.serving.voice_names import OPENAI_VOICES, check_new_name, resolve


class Names:
    """A TEST DOUBLE of the registry: only its names (presets first, as the registry lists them)."""

    def __init__(self, *names):
        self._names = list(names)

    def names(self):
        return self._names


def test_case_and_openai_names():
    reg = Names("default", "alpha", "rms", "Alice", "nova")
    assert resolve(reg, "ALPHA") == "alpha" and resolve(reg, "alice") == "Alice" and resolve(reg, "Default") == "default"
    assert resolve(reg, "alloy") == "default" and resolve(reg, "Echo") == "rms" and resolve(reg, "shimmer") == "alpha"
    assert resolve(reg, "nova") == "nova" and resolve(reg, "NOVA") == "nova"  # a registered "nova" wins
    assert resolve(reg, "nobody") == "nobody"  # unknown: left for the registry to report
    assert resolve(reg, "echo", aliases=False) == "echo"  # deleting never reaches a preset through an alias
    assert set(OPENAI_VOICES.values()) == {"default", "alpha", "rms"}
    assert {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin",
            "cedar"} == set(OPENAI_VOICES)


def test_new_names_ignore_case():
    reg = Names("default", "alpha", "Alice")
    check_new_name(reg, "bob")
    check_new_name(reg, "Alice")  # the exact name: the registry itself reports that one
    with pytest.raises(VoiceExists, match="'Alice' exists"):
        check_new_name(reg, "ALICE")
    with pytest.raises(VoiceExists, match="'alpha' exists"):
        check_new_name(reg, "Alpha")
