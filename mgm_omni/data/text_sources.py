"""Sentences from the offline text sources of ../shared/ASSETS.md §7: read, split, normalise, filter, dedupe.

Sources (names used in the config):
- ``fortunes``: every English file of Debian fortunes / fortunes-min (records separated by ``%``),
- ``wordnet``: example sentences quoted in the glosses of ``/usr/share/wordnet/data.*``,
- ``fortunes-zh``: the ``chinese`` file of fortunes-zh, ANSI colour codes stripped, simplified only,
- ``hsk-zh`` / ``hsk-en``: HSK 1-6 sentences and their English translations (``hsk-sentences-audio``),
- ``file:PATH``: a UTF-8 file of one sentence a line (lang given by the config key it is listed under).

Filters: EN 4-20 words, only letters, spaces and ``,.'?!;:-``, a capital first letter, ending in ``.?!``, no
all-caps word of 3+ letters. ZH 6-30 characters, Han characters and Chinese punctuation only, ending in
``。！？``, and unchanged by OpenCC traditional-to-simplified conversion.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
NON_EN_FORTUNES = {"chinese", "tang300", "song100", "ascii-art", "translate-me"}
DEFAULT_SOURCES = {"en": ("fortunes", "wordnet", "hsk-en"), "zh": ("fortunes-zh", "hsk-zh")}


class SourceError(ValueError):
    """A text source that is unknown, missing or gives no usable sentence."""


@dataclass(frozen=True)
class Sentence:
    text: str
    lang: str
    source: str  # "fortunes:literature", "wordnet:verb", "hsk-zh", "file:/path"
    line: int  # 1-based line of the record in the source file (index for HSK)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EN_OK = re.compile(r"[A-Za-z ,.'?!;:\-]+")
_EN_ABBREV = re.compile(r"\b[A-Za-z]\.\s?[A-Za-z]\.|\b[a-z]{1,4}\.[:;,]|\.[:;]")  # e.g., U.S., n.:, adj.;
_EN_SPLIT = re.compile(r"(?<=[.?!])\s+(?=[A-Z])")
_ZH_SPLIT = re.compile(r"(?<=[。！？])")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff"
_ZH_OK = re.compile(f"[{_HAN}，。！？、；：“”‘’（）《》—…·]+")
_ZH_PUNCT = str.maketrans({",": "，", "!": "！", "?": "？", ";": "；", ":": "："})


def normalise_en(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").replace("\u2014", " - ")
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.?!;:])", r"\1", text)
    return text


def normalise_zh(text: str) -> str:
    text = re.sub(r"\s+", "", unicodedata.normalize("NFC", text)).translate(_ZH_PUNCT)
    text = re.sub(r"[“”‘’「」『』\"]", "", text)  # quotes are not spoken, and sentence splits unbalance them
    text = re.sub(r"^[，、；：。！？）》—…·]+", "", text)
    return re.sub(r"(?<=[^.])\.$", "。", text)


def keep_en(s: str) -> bool:
    words = s.split()
    return (4 <= len(words) <= 20 and bool(_EN_OK.fullmatch(s)) and s[0].isupper() and s[-1] in ".?!"
            and not _EN_ABBREV.search(s)
            and not any(len(w.strip(",.'?!;:-")) >= 3 and w.strip(",.'?!;:-").isupper() for w in words))


@functools.lru_cache(maxsize=1)
def _t2s():
    try:
        import opencc
    except ImportError as exc:  # pragma: no cover - opencc is in the data extra
        raise SourceError("Mandarin sources need OpenCC: pip install 'mgm-omni[data]'") from exc
    return opencc.OpenCC("t2s")


def keep_zh(s: str) -> bool:
    return (6 <= len(s) <= 30 and bool(_ZH_OK.fullmatch(s)) and s[-1] in "。！？"
            and re.search(f"[{_HAN}]", s) is not None and _t2s().convert(s) == s)


def dedupe_key(text: str, lang: str) -> str:
    if lang == "en":
        return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
    return "".join(re.findall(f"[{_HAN}]", text))


def _records(path: Path):
    """(first line number, lines) of each %-separated fortune record."""
    lines, start = [], 1
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip() == "%":
            if lines:
                yield start, lines
            lines, start = [], i + 1
        else:
            lines.append(_ANSI.sub("", line))
    if lines:
        yield start, lines


def _without_attribution(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not re.match(r"\s*(--|——)", ln)]


def _fortunes_en(root: Path):
    files = sorted(p for p in root.glob("*") if p.is_file() and not p.suffix and p.name not in NON_EN_FORTUNES)
    for path in files:
        for line, rec in _records(path):
            for s in _EN_SPLIT.split(normalise_en(" ".join(_without_attribution(rec)))):
                yield s, f"fortunes:{path.name}", line


def _fortunes_zh(root: Path):
    path = root / "chinese"
    if not path.exists():
        return
    for line, rec in _records(path):
        for s in _ZH_SPLIT.split(normalise_zh("".join(ln.strip() for ln in _without_attribution(rec)))):
            yield s, "fortunes-zh:chinese", line


def _wordnet(root: Path):
    for part in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{part}"
        if not path.exists():
            continue
        with open(path, encoding="latin-1") as f:
            for i, line in enumerate(f, 1):
                if line.startswith(" ") or "|" not in line:
                    continue  # licence header
                for quote in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                    s = normalise_en(quote)
                    if s:
                        s = s[0].upper() + s[1:]
                        yield (s if s[-1] in ".?!" else s + "."), f"wordnet:{part}", i


def _hsk(lang: str):
    try:
        import hsk_sentences_audio
    except ImportError as exc:
        raise SourceError(f"source hsk-{lang} needs hsk-sentences-audio: pip install 'mgm-omni[data]'") from exc
    for i, rec in enumerate(hsk_sentences_audio.load_sentences(), 1):
        text = rec.get("chinese") if lang == "zh" else (rec.get("translation") or {}).get("en")
        if text:
            yield (normalise_zh(text) if lang == "zh" else normalise_en(text)), f"hsk-{lang}", i


def _file(path: Path, lang: str):
    if not path.is_file():
        raise SourceError(f"text source file {path} does not exist")
    norm = normalise_en if lang == "en" else normalise_zh
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield norm(line), f"file:{path}", i


def _raw(name: str, lang: str):
    if name.startswith("file:"):
        return _file(Path(name[5:]).expanduser(), lang)
    table = {("fortunes", "en"): lambda: _fortunes_en(FORTUNES_DIR), ("wordnet", "en"): lambda: _wordnet(WORDNET_DIR),
             ("fortunes-zh", "zh"): lambda: _fortunes_zh(FORTUNES_DIR), ("hsk-zh", "zh"): lambda: _hsk("zh"),
             ("hsk-en", "en"): lambda: _hsk("en")}
    if (name, lang) not in table:
        known = ", ".join(sorted(n for n, lg in table if lg == lang))
        raise SourceError(f"unknown {lang} text source {name!r}; known: {known}, file:PATH")
    return table[(name, lang)]()


def load_sentences(sources: dict[str, tuple[str, ...]]) -> dict[str, list[Sentence]]:
    """Read, filter and dedupe each language's sources, in source order (first occurrence wins).

    Raises ``SourceError`` when a source is unknown or yields no usable sentence.
    """
    out: dict[str, list[Sentence]] = {}
    for lang, names in sources.items():
        if lang not in ("en", "zh"):
            raise SourceError(f"unknown language {lang!r}; use en or zh")
        keep = keep_en if lang == "en" else keep_zh
        seen: set[str] = set()
        sentences: list[Sentence] = []
        for name in names:
            n_kept = 0
            for text, source, line in _raw(name, lang):
                key = dedupe_key(text, lang)
                if key and key not in seen and keep(text):
                    seen.add(key)
                    sentences.append(Sentence(text, lang, source, line))
                    n_kept += 1
            if n_kept == 0:
                raise SourceError(f"{lang} text source {name!r} gives no usable sentence (missing package, "
                                  "empty file, or nothing passes the filters)")
        out[lang] = sentences
    return out
