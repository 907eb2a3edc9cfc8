"""How a requested voice name finds a voice: exact, then ignoring case, then OpenAI's voice names.

OpenAI clients send ``alloy``, ``nova`` and the like. They map to the bundled presets (documented in
README.md): the female-sounding OpenAI voices to ``alpha`` (English female), the male-sounding ones to
``rms`` (US English male), ``alloy`` (neutral) to ``default``. A registered voice of the same name wins.
"""

from __future__ import annotations

from mgm_omni.engine.voices import VoiceExists, VoiceRegistry

OPENAI_VOICES = {
    "alloy": "default",
    "ash": "rms", "ballad": "rms", "cedar": "rms", "echo": "rms", "fable": "rms", "onyx": "rms", "verse": "rms",
    "coral": "alpha", "marin": "alpha", "nova": "alpha", "sage": "alpha", "shimmer": "alpha",
}


def resolve(registry: VoiceRegistry, name: str, aliases: bool = True) -> str:
    """The registry name that ``name`` means (unchanged when nothing matches: the registry reports it);
    ``aliases=False`` ignores case only (to delete a voice, never a preset an OpenAI name points to)."""
    if not isinstance(name, str):
        return name
    names = registry.names()
    if name in names:
        return name
    folded = {n.casefold(): n for n in reversed(names)}  # presets (listed first) win a case tie
    if name.casefold() in folded:
        return folded[name.casefold()]
    target = OPENAI_VOICES.get(name.casefold()) if aliases else None
    if target is not None and target in names:
        return target
    return name


def check_new_name(registry: VoiceRegistry, name: str) -> None:
    """Refuse a new voice whose name differs from an existing one only in case (names are case-insensitive)."""
    if not isinstance(name, str):
        return
    for existing in registry.names():
        if existing != name and existing.casefold() == name.casefold():
            raise VoiceExists(f"a voice named {existing!r} exists (voice names ignore case); choose another name")
