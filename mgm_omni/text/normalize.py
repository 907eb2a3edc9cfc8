"""Text -> language spans and punctuation marks, the input of the grapheme-to-phoneme step.

``normalize("Hi, 我有3个apple.")`` -> ``[Span("en", "Hi"), ",", Span("zh", "我有三个"), Span("en", "apple"), "."]``

1. NFKC (full-width Latin and punctuation become ASCII), then numbers and symbols are written out in the
   language of their context: the nearest letter or Han character before them, unless they touch a Han
   character (``3个``), then Mandarin; text with no letter at all uses ``default_lang``.
2. Han characters make Mandarin spans, Latin letters English spans (other scripts are dropped and logged).
3. Punctuation becomes a pause ``,`` or a sentence end ``. ? ! ;``; a run of marks keeps its strongest
   (``?!`` -> ``?``, ``...`` -> ``.``); a line break ends a sentence that has no mark; quotes are dropped.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

from .errors import TextError
from .normalize_en import normalize_numbers_en
from .normalize_zh import normalize_numbers_zh

log = logging.getLogger(__name__)

LANGS = ("en", "zh")
PAUSE = ","
SENTENCE_ENDS = (".", "?", "!", ";")
PUNCTUATION = (PAUSE, *SENTENCE_ENDS)

_TO_END = {".": ".", "?": "?", "!": "!", ";": ";", "。": ".", "？": "?", "！": "!", "；": ";", "…": "."}
_TO_PAUSE = frozenset(",，、:：—–()[]{}（）【】")
_DROPPED = frozenset("\"'“”‘’「」『』«»《》〈〉*#_~`^|\\<>-‐‑/")
_HAN_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
    (0x30000, 0x323AF),
)


@dataclass(frozen=True)
class Span:
    """A run of one language: English words separated by single spaces, or Han characters only."""

    lang: str
    text: str


def is_han(ch: str) -> bool:
    """Whether ``ch`` is a Han character (CJK Unified Ideographs, extensions A-H, compatibility) or 〇."""
    cp = ord(ch)
    return ch == "〇" or any(lo <= cp <= hi for lo, hi in _HAN_RANGES)


def is_latin(ch: str) -> bool:
    """Whether ``ch`` is a Latin letter (accented ones included)."""
    return ch.isalpha() and ch.isascii() or (ch.isalpha() and "LATIN" in unicodedata.name(ch, ""))


def _char_lang(ch: str) -> str | None:
    if is_han(ch):
        return "zh"
    if is_latin(ch):
        return "en"
    return None


def _language_runs(text: str, default_lang: str) -> list[tuple[str, str]]:
    """Split ``text`` into (lang, run) pieces; characters with no script take their context's language.

    Adjacent pieces of one language are merged, so ``Mr. Smith`` and ``21st`` reach one normaliser whole.
    """
    langs = [_char_lang(ch) for ch in text]
    out: list[tuple[str, str]] = []
    last = None  # language of the last letter or Han character seen
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and langs[j] == langs[i]:
            j += 1
        lang = langs[i]
        if lang is None:  # a script-less run (digits, symbols, spaces, punctuation): pick its context
            after = langs[j] if j < len(text) else None
            touches_han = after == "zh" or last == "zh" and i > 0 and langs[i - 1] == "zh"
            lang = "zh" if touches_han else last or after or default_lang
        else:
            last = lang
        if out and out[-1][0] == lang:
            out[-1] = (lang, out[-1][1] + text[i:j])
        else:
            out.append((lang, text[i:j]))
        i = j
    return out


def _strongest(marks: list[str]) -> str:
    ends = [_TO_END[m] for m in marks if m in _TO_END]
    if ends:
        return ends[0]
    return "." if "\n" in marks else PAUSE


def normalize(text: str, default_lang: str = "en") -> list[Span | str]:
    """Language spans and punctuation marks of ``text`` (see the module docstring)."""
    if not isinstance(text, str):
        raise TextError(f"text must be str, got {type(text).__name__}")
    if default_lang not in LANGS:
        raise TextError(f"default_lang must be one of {LANGS}, got {default_lang!r}")
    text = unicodedata.normalize("NFKC", text).replace("\r", "\n")
    # A dash between spaces is a pause; a hyphen or slash inside a word separates words.
    text = re.sub(r"\s[-‐‑]+\s", " — ", text)
    text = re.sub(r"(?<=[^\W\d_])[-‐‑/](?=[^\W\d_])", " ", text)
    pieces = []
    for lang, run in _language_runs(text, default_lang):
        pieces.append(normalize_numbers_zh(run) if lang == "zh" else normalize_numbers_en(run))
    return _units("".join(pieces))


def _units(text: str) -> list[Span | str]:
    units: list[Span | str] = []
    span_lang, span = None, []
    marks: list[str] = []
    dropped: set[str] = set()

    def flush_span():
        nonlocal span_lang, span
        words = "".join(span).split()
        if words:
            units.append(Span(span_lang, " ".join(words) if span_lang == "en" else "".join(words)))
        span_lang, span = None, []

    def flush_marks():
        nonlocal marks
        mark = _strongest(marks) if marks else None
        marks = []
        if mark is None or not units:
            return  # nothing to mark, or a mark before any speech
        if isinstance(units[-1], str):  # two groups of marks with nothing speakable between them
            if units[-1] == PAUSE and mark != PAUSE:
                units[-1] = mark
            return
        units.append(mark)

    for i, ch in enumerate(text):
        lang = _char_lang(ch)
        is_apostrophe = ch in "'’" and span_lang == "en" and i + 1 < len(text) and is_latin(text[i + 1])
        if lang is not None or is_apostrophe:
            lang = lang or "en"
            if lang != span_lang:
                flush_span()
            flush_marks()
            span_lang = lang
            span.append("'" if is_apostrophe else ch)
        elif ch in _TO_END or ch in _TO_PAUSE or ch == "\n":
            flush_span()
            marks.append(ch)
        elif ch.isspace():
            if span_lang == "zh":
                flush_span()
            span.append(" ")
        elif ch not in _DROPPED:
            dropped.add(ch)
    flush_span()
    flush_marks()
    if dropped:
        log.info("text front-end: dropped characters it cannot speak: %s", "".join(sorted(dropped)))
    return units
