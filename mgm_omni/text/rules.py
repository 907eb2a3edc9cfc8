"""Text rules of the decoding schedule: sentence ends, skippable tokens, CJK, reference transcripts.

All functions take decoded text (``Tokenizer.decode([t])`` for a single token), never ids, so the
SpeechLM tokenizer is the one that decides (spec §2.7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import TextError

log = logging.getLogger(__name__)

# Spec §2.2: a token ends a sentence if its decoded text STARTS with one of these (the official list
# also holds "...", which the "." already covers) or ENDS with a newline. A token like ".\n\n" or "。"
# counts; "Mr." does not (its first character is a letter).
SENTENCE_END_FIRST_CHARS = frozenset(".?!;。？！；\n")

# Spec §2.2: leading buffer tokens of a chunk made only of these are dropped (markdown and blank lines
# carry no speech). Tabs and "\r" are not in the official set and are kept.
SKIPPABLE_CHARS = frozenset(" \n*#")

CJK_ENDINGS = ("。", "！", "？")
LATIN_ENDINGS = (".", "!", "?")

# Ranges for is_cjk_char (broader than the spec's CJK test, which is U+4E00–U+9FFF only).
_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul Syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # Extensions B-F and Compatibility Ideographs Supplement
    (0x30000, 0x323AF),  # Extensions G-H
)


def _check_str(text, what: str) -> str:
    if not isinstance(text, str):
        raise TextError(f"{what} must be str, got {type(text).__name__}")
    return text


def is_sentence_end(token_text: str) -> bool:
    """Whether a decoded token ends a sentence (spec §2.2). Empty text is not a sentence end."""
    _check_str(token_text, "token text")
    return bool(token_text) and (token_text[0] in SENTENCE_END_FIRST_CHARS or token_text[-1] == "\n")


def is_skippable(token_text: str) -> bool:
    """Whether a decoded token holds only spaces, ``\\n``, ``*`` or ``#`` (dropped at a chunk start).

    Empty text counts as skippable: a token that decodes to nothing has nothing to voice, and skipping
    it cannot shift the chunk schedule of any text that does.
    """
    _check_str(token_text, "token text")
    return all(ch in SKIPPABLE_CHARS for ch in token_text)


def contains_cjk(text: str) -> bool:
    """Whether ``text`` has a character in U+4E00–U+9FFF: the spec's test for the Chinese pre-prompt
    (§2.1) and for the Chinese transcript ending (§2.8). Kana or Hangul alone do not count."""
    _check_str(text, "text")
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def is_cjk_char(ch: str) -> bool:
    """Broad CJK test for one character: Han ideographs (incl. extensions and compatibility forms),
    kana and Hangul. For language heuristics; the prompt rules use ``contains_cjk``."""
    if not isinstance(ch, str) or len(ch) != 1:
        raise TextError(f"is_cjk_char expects one character, got {ch!r}")
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def finish_reference_transcript(text: str, to_simplified: Callable[[str], str] | None = None) -> str:
    """Tidy an ASR transcript of the reference clip (spec §2.8).

    Surrounding whitespace is removed (Whisper starts its text with a space). CJK text (``contains_cjk``)
    gets ``。`` appended unless it ends in ``。！？`` and is passed through ``to_simplified``, if given
    (the official code uses OpenCC ``t2s``; see ``load_t2s_converter``). Other text gets ``.`` appended
    unless it ends in ``.!?``, and its first character upper-cased.

    Raises ``TextError`` for a transcript that is empty after stripping.
    """
    text = _check_str(text, "reference transcript").strip()
    if not text:
        raise TextError("reference transcript is empty (the ASR heard no speech in the reference clip)")
    if contains_cjk(text):
        if not text.endswith(CJK_ENDINGS):
            text += "。"
        if to_simplified is not None:
            text = to_simplified(text)
        return text
    if not text.endswith(LATIN_ENDINGS):
        text += "."
    return text[0].upper() + text[1:]


def load_t2s_converter() -> Callable[[str], str] | None:
    """OpenCC Traditional->Simplified converter if the ``opencc`` package is installed, else ``None``.

    The conversion is optional: without it a Traditional-Chinese transcript is kept as is, which only
    matters if the SpeechLM reads Traditional characters worse than Simplified ones.
    """
    try:
        import opencc  # optional dependency
    except ImportError:
        log.info("opencc not installed: reference transcripts keep Traditional characters")
        return None
    return opencc.OpenCC("t2s").convert
