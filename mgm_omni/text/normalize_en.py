"""English text normalisation: numbers, money, times and common abbreviations written out as words.

espeak-ng would read most digits itself, but the tokenizer's vocabulary is learnt from the words the
normaliser writes, so one reading per pattern is fixed here: ``21st`` -> ``twenty first``,
``1999`` -> ``nineteen ninety nine``, ``$5.50`` -> ``five dollars fifty cents``, ``3:05`` -> ``three oh five``,
``50%`` -> ``fifty percent``, ``Dr.`` -> ``doctor``. Number words carry no commas (a comma is a pause).
"""

from __future__ import annotations

import re

from num2words import num2words

from .errors import TextError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_CARDINAL = 10**15 - 1

# Abbreviations whose period is not a sentence end (matched case-sensitively, at a word start).
ABBREVIATIONS = {
    "Mr.": "mister",
    "Mrs.": "missus",
    "Ms.": "miz",
    "Dr.": "doctor",
    "Prof.": "professor",
    "St.": "saint",
    "Mt.": "mount",
    "Jr.": "junior",
    "Sr.": "senior",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "a.m.": "A M",
    "p.m.": "P M",
}
_ABBREV_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")")
# Initialisms written with periods (U.S., U.K.) lose them so their last period is not a sentence end.
_INITIALISM_RE = re.compile(r"(?<![\w.])((?:[A-Z]\.){2,})")

_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents"), "¥": ("yuan", "yuan", "", "")}  # fmt: skip

NUMBER_RE = re.compile(
    r"(?P<sign>(?<![\w.])[-−])?(?P<cur>[$£€¥])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)"
    r"(?:(?P<ord>st|nd|rd|th)\b|:(?P<min>[0-5]\d)\b|\.(?P<frac>\d+)|/(?P<den>\d+))?"
    r"(?P<pct>\s?%)?"
)

_RANGE_RE = re.compile(r"(?<=\d)\s?[-–]\s?(?=\d)")  # 3-5 -> 3 to 5
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at ", "%": " percent "}


def _words(text: str) -> str:
    """num2words output as plain words: no commas (pauses) and no hyphens."""
    return re.sub(r"[,\-]", " ", text).replace("  ", " ").strip()


def digits_en(digits: str) -> str:
    """One word per digit: ``"0420"`` -> ``"zero four two zero"``."""
    if not digits.isdigit() or not digits.isascii():
        raise TextError(f"digits_en expects ASCII digits, got {digits!r}")
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def cardinal_en(n: int) -> str:
    """``1234`` -> ``one thousand two hundred and thirty four`` (below 10^15)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > MAX_CARDINAL:
        raise TextError(f"cardinal_en expects an int in [0, {MAX_CARDINAL}], got {n!r}")
    return _words(num2words(n))


def _integer_en(digits: str, as_year: bool) -> str:
    n = int(digits)
    if (len(digits) > 1 and digits.startswith("0")) or n > MAX_CARDINAL:
        return digits_en(digits)
    if as_year and 1100 <= n <= 2099 and n % 1000 != 0:
        return _words(num2words(n, to="year"))
    return cardinal_en(n)


def number_en(match: re.Match) -> str:
    """English reading of one ``NUMBER_RE`` match."""
    sign, cur, whole, ordinal, minutes, frac, den, pct = (
        match.group(k) for k in ("sign", "cur", "int", "ord", "min", "frac", "den", "pct")
    )
    plain = "," not in whole
    whole = whole.replace(",", "")
    if ordinal:
        text = _words(num2words(int(whole), to="ordinal"))
    elif minutes is not None:  # a clock time: 3:05 -> three oh five, 3:00 -> three o'clock
        hour = cardinal_en(int(whole))
        mins = int(minutes)
        if mins == 0:
            text = f"{hour} o'clock"
        elif mins < 10:
            text = f"{hour} oh {DIGIT_WORDS[mins]}"
        else:
            text = f"{hour} {cardinal_en(mins)}"
    elif den is not None:
        text = f"{cardinal_en(int(whole))} over {cardinal_en(int(den))}"
    else:
        bare_year = plain and len(whole) == 4 and not (cur or frac or pct or sign)
        text = _integer_en(whole, as_year=bare_year)
        has_cents = bool(cur) and bool(_CURRENCY[cur][2])
        if frac is not None and not has_cents:
            text += " point " + digits_en(frac)
    if cur:
        one, many, sub_one, sub_many = _CURRENCY[cur]
        text += " " + (one if whole == "1" and not (frac and not sub_one) else many)
        cents = int(frac[:2].ljust(2, "0")) if frac and sub_one else 0
        if cents:
            text += f" {cardinal_en(cents)} {sub_one if cents == 1 else sub_many}"
    if pct:
        text += " percent"
    if sign:
        text = "minus " + text
    return f" {text} "


def normalize_numbers_en(text: str) -> str:
    """Write abbreviations, numbers and ``& + = @ %`` of an English text as words."""
    if not isinstance(text, str):
        raise TextError(f"text must be str, got {type(text).__name__}")
    text = _ABBREV_RE.sub(lambda m: ABBREVIATIONS[m.group(1)], text)
    text = _INITIALISM_RE.sub(lambda m: m.group(1).replace(".", ""), text)
    text = _RANGE_RE.sub(" to ", text)
    text = NUMBER_RE.sub(number_en, text)
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    return re.sub(r"[ \t]{2,}", " ", text)
