"""Mandarin text normalisation: Arabic numbers and a few symbols written out in Chinese characters.

The G2P reads Han characters only, so every digit of a Chinese span must become a numeral first:
``3个`` -> ``三个``, ``2个`` -> ``两个``, ``2024年`` -> ``二零二四年``, ``3.5`` -> ``三点五``,
``50%`` -> ``百分之五十``, ``1/3`` -> ``三分之一``, ``-4`` -> ``负四``, ``10086`` -> ``一万零八十六``.
"""

from __future__ import annotations

import re

from .errors import TextError

DIGITS = "零一二三四五六七八九"
_SMALL_UNITS = ("", "十", "百", "千")
_BIG_UNITS = ("", "万", "亿", "万亿")  # 10^0, 10^4, 10^8, 10^12
MAX_CARDINAL = 10**16 - 1

# Measure words after which a lone 2 is read 两 ("两个", not "二个").
_LIANG_BEFORE = frozenset("个只本次天位条件张台辆份种块名岁点周间双对头匹把杯瓶斤")

_CURRENCY = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_SYMBOLS = {"&": "和", "+": "加", "=": "等于", "%": "", "@": ""}

# One number: optional sign or currency, digits (with thousands commas), optional decimal part,
# optional fraction or percent.
NUMBER_RE = re.compile(
    r"(?P<sign>[-−])?(?P<cur>[¥￥$€£])?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:/(?P<den>\d+))?(?P<pct>%)?"
)


def digits_zh(digits: str) -> str:
    """Read a digit string one digit at a time (years, codes, phone numbers): ``2024`` -> ``二零二四``."""
    if not digits.isdigit() or not digits.isascii():
        raise TextError(f"digits_zh expects ASCII digits, got {digits!r}")
    return "".join(DIGITS[int(d)] for d in digits)


def cardinal_zh(n: int) -> str:
    """Chinese numeral of a non-negative integer below 10^16: ``10086`` -> ``一万零八十六``,
    ``15`` -> ``十五``, ``100000`` -> ``十万``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > MAX_CARDINAL:
        raise TextError(f"cardinal_zh expects an int in [0, {MAX_CARDINAL}], got {n!r}")
    if n == 0:
        return DIGITS[0]
    groups = []  # 4-digit groups, least significant first
    while n:
        n, group = divmod(n, 10000)
        groups.append(group)
    out = []
    need_zero = False
    for level in range(len(groups) - 1, -1, -1):
        group = groups[level]
        if group == 0:
            need_zero = bool(out)
            continue
        if out and (need_zero or group < 1000):
            out.append(DIGITS[0])  # a gap of zeros between non-zero groups: 一万零八十六
        out.append(_group_zh(group) + _BIG_UNITS[level])
        need_zero = False
    text = "".join(out)
    # 一十 at the very start reads 十 (十五, 十万); elsewhere it stays (一百一十).
    return text[1:] if text.startswith("一十") else text


def _group_zh(group: int) -> str:
    """Numeral of 1..9999 with inner zeros: 1005 -> 一千零五, 1050 -> 一千零五十."""
    out = []
    zero_pending = False
    for pos in range(3, -1, -1):
        d = group // 10**pos % 10
        if d == 0:
            zero_pending = bool(out)
            continue
        if zero_pending:
            out.append(DIGITS[0])
            zero_pending = False
        out.append(DIGITS[d] + _SMALL_UNITS[pos])
    return "".join(out)


def number_zh(match: re.Match, following: str = "") -> str:
    """Chinese reading of one ``NUMBER_RE`` match; ``following`` is the text right after it."""
    sign, cur, whole, frac, den, pct = (match.group(k) for k in ("sign", "cur", "int", "frac", "den", "pct"))
    whole = whole.replace(",", "")
    if den is not None and frac is None:  # a fraction a/b reads b分之a
        text = f"{_integer_zh(den, '')}分之{_integer_zh(whole, '')}"
    elif len(whole) == 4 and frac is None and not pct and following.startswith("年"):
        text = digits_zh(whole)  # a year: 二零二四年
    else:
        text = _integer_zh(whole, following if frac is None and not pct and not cur else "")
        if frac is not None:
            text += "点" + digits_zh(frac)
        if den is not None:
            text += "/" + _integer_zh(den, "")  # a/b.c is not a fraction we read; keep the slash as a pause
    if pct:
        text = "百分之" + text
    if cur:
        text += _CURRENCY[cur]
    if sign:
        text = "负" + text
    return text


def _integer_zh(digits: str, following: str) -> str:
    if (len(digits) > 1 and digits.startswith("0")) or int(digits) > MAX_CARDINAL:
        return digits_zh(digits)  # codes and very long strings: one digit at a time
    if digits == "2" and following[:1] in _LIANG_BEFORE:
        return "两"
    return cardinal_zh(int(digits))


def normalize_numbers_zh(text: str) -> str:
    """Write every number and ``& + =`` of a Chinese text in Chinese characters."""
    if not isinstance(text, str):
        raise TextError(f"text must be str, got {type(text).__name__}")
    text = NUMBER_RE.sub(lambda m: number_zh(m, m.string[m.end() :]), text)
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    return text
