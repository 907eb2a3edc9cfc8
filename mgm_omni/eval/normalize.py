"""Text normalisation for WER/CER scoring, reproducing the official Long-TTS-Eval order (spec §6.3 step 3).

    (a) each run of digits becomes `` <number words> `` (``num2words``); if any conversion fails, the whole
        string is left unchanged;
    (b) lower-case, and every character of ``zhon.hanzi.punctuation + string.punctuation`` becomes a space;
    (c) whitespace is collapsed;
    (d) Chinese only: a space goes around every CJK ideograph (U+4E00..U+9FFF), so each is one token and the
        word error rate becomes a character error rate, while Latin words stay words.

Chinese digits: the official code calls ``num2words(n, lang="zh")``, and every released ``num2words`` (0.5.14
included) has no ``zh`` converter and raises ``NotImplementedError``; by rule (a) a Chinese string with digits
is therefore scored with its digits untouched. ``ZH_DIGITS_OFFICIAL`` reproduces that; ``ZH_DIGITS_READ``
reads the digits as Chinese numerals instead (一百二十三), which is what a Chinese ASR judge usually writes.
"""

from __future__ import annotations

import re
import string

# zhon.hanzi.punctuation (zhon 2.1.1), embedded so scoring does not need the package; a test checks equality.
HANZI_PUNCTUATION = (
    "＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､\u3000"
    "、〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏﹑﹔·．！？｡。"
)
PUNCTUATION = HANZI_PUNCTUATION + string.punctuation
_PUNCT_RE = re.compile(f"[{re.escape(PUNCTUATION)}]")
_DIGITS_RE = re.compile(r"\d+")  # \d is Unicode-aware, as in the official regex (full-width digits count)
_CJK_AFTER_TOKEN = re.compile(r"(?<=[^\s])([\u4e00-\u9fff])")
_CJK_BEFORE_TOKEN = re.compile(r"([\u4e00-\u9fff])(?=[^\s])")
_HAS_CJK = re.compile(r"[\u4e00-\u9fff]")

LANGUAGES = ("en", "zh")
ZH_DIGITS_OFFICIAL = "official"
ZH_DIGITS_READ = "read"

_ZH_DIGIT = "零一二三四五六七八九"
_ZH_SMALL_UNITS = ("", "十", "百", "千")
_ZH_BIG_UNITS = ("", "万", "亿", "万亿")


class NormalizeError(ValueError):
    """An unknown language or digit mode."""


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise NormalizeError(f"unknown scoring language {language!r}; expected one of {LANGUAGES}")
    return language


def has_cjk(text: str) -> bool:
    return bool(_HAS_CJK.search(text))


def zh_number_words(n: int) -> str:
    """Modern simplified Chinese cardinal reading: 10 -> 十, 101 -> 一百零一, 20000 -> 二万.

    Numbers of 10^16 and more are read digit by digit (no common unit name).
    """
    if n < 0:
        raise NormalizeError(f"zh_number_words takes a non-negative integer, got {n}")
    if n == 0:
        return _ZH_DIGIT[0]
    if n >= 10**16:
        return "".join(_ZH_DIGIT[int(d)] for d in str(n))
    groups = []  # 4-digit groups, least significant first
    while n:
        n, g = divmod(n, 10000)
        groups.append(g)
    out, need_zero = "", False
    for i in range(len(groups) - 1, -1, -1):
        g = groups[i]
        if g == 0:
            need_zero = bool(out)  # a skipped group leaves a gap to mark with 零
            continue
        if out and (need_zero or g < 1000):
            out += _ZH_DIGIT[0]
        out += _group_words(g) + _ZH_BIG_UNITS[i]
        need_zero = False
    if out.startswith("一十"):  # 10-19 at the head are read 十, 十一, ...
        out = out[1:]
    return out


def _group_words(g: int) -> str:
    """Reading of 1..9999 without a leading 零 (zeros inside are read once: 1001 -> 一千零一)."""
    digits = [int(c) for c in f"{g:04d}"]
    out, pending_zero = "", False
    for pos, d in enumerate(digits):
        if d == 0:
            pending_zero = bool(out)
            continue
        if pending_zero:
            out += _ZH_DIGIT[0]
            pending_zero = False
        out += _ZH_DIGIT[d] + _ZH_SMALL_UNITS[3 - pos]
    return out


def _number_words(n: int, language: str, zh_digits: str) -> str:
    if language == "en":
        from num2words import num2words

        return num2words(n, lang="en")
    if zh_digits == ZH_DIGITS_READ:
        return zh_number_words(n)
    raise NotImplementedError("num2words has no 'zh' converter")  # what the official call does


def normalize_text(text: str, language: str = "en", zh_digits: str = ZH_DIGITS_OFFICIAL) -> str:
    """Normalise a reference or a hypothesis for scoring (steps (a)-(d) above).

    Args:
        text: raw text.
        language: ``"en"`` (word tokens) or ``"zh"`` (one token per CJK character).
        zh_digits: ``"official"`` (digits kept, as the official scorer ends up doing) or ``"read"``.
    Returns:
        space-separated tokens, lower-case, without punctuation.
    """
    check_language(language)
    if zh_digits not in (ZH_DIGITS_OFFICIAL, ZH_DIGITS_READ):
        raise NormalizeError(
            f"zh_digits must be {ZH_DIGITS_OFFICIAL!r} or {ZH_DIGITS_READ!r}, got {zh_digits!r}"
        )
    try:
        text = _DIGITS_RE.sub(lambda m: f" {_number_words(int(m.group(0)), language, zh_digits)} ", text)
    except ImportError:  # a missing package must not pass for "conversion failed"
        raise NormalizeError(
            "English scoring reads digits with num2words: pip install num2words==0.5.14"
        ) from None
    except Exception:  # noqa: BLE001 - official rule: any failed conversion leaves the string as it was
        pass
    text = _PUNCT_RE.sub(" ", text.lower())
    text = " ".join(text.split())
    if language == "zh":
        text = _CJK_AFTER_TOKEN.sub(r" \1", text)
        text = _CJK_BEFORE_TOKEN.sub(r"\1 ", text)
    return text


def language_of_split(split: str) -> str | None:
    """The scoring language a split name implies (``..._en`` / ``..._zh``), else None."""
    tail = split.lower().rsplit("_", 1)[-1]
    return tail if tail in LANGUAGES else None


def guess_language(text: str) -> str:
    return "zh" if has_cjk(text) else "en"
