"""Scoring maths with hand-computed values: normalisation edge cases, WER/CER, aggregation, drift, stats."""

from __future__ import annotations

import math
import sys

import pytest

from mgm_omni.eval.drift import minute_wer
from mgm_omni.eval.judges import Segment, strip_prompt_echo
from mgm_omni.eval.metrics import (
    MetricError,
    aggregate_wer,
    cosine_similarity,
    error_counts,
    latency_stats,
    real_time_factor,
    score_transcript,
)
from mgm_omni.eval.normalize import HANZI_PUNCTUATION, NormalizeError, normalize_text, zh_number_words

pytest.importorskip("jiwer")
pytest.importorskip("num2words")


# ------------------------------------------------------------------------------------------ normalise


@pytest.mark.parametrize(
    "text, expected",
    [
        # (a) digits -> " words " (num2words' hyphen and "and" survive until (b) turns the hyphen to a space)
        ("Hello, World! It's 2 PM.", "hello world it s two pm"),
        ("In 2024 we met 21 people", "in two thousand and twenty four we met twenty one people"),
        ("Pay $1,234.50 now", "pay one two hundred and thirty four fifty now"),  # each digit run on its own
        ("Room 007", "room seven"),  # int("007") as in the official code
        # one failed conversion (num2words overflows above 10**303) leaves every digit of the string as it was
        ("Call 5 now " + "1" + "0" * 400, "call 5 now 1" + "0" * 400),
        ("  MIXED   Case\t\nwhitespace  ", "mixed case whitespace"),
        ("“Quotes” — and… dashes–here", "quotes and dashes here"),
        ("", ""),
    ],
)
def test_normalize_english(text, expected):
    assert normalize_text(text, "en") == expected


@pytest.mark.parametrize(
    "text, mode, expected",
    [
        ("今天天气很好。", "official", "今 天 天 气 很 好"),
        # num2words has no 'zh': the official call fails, so Chinese digits stay one token
        ("我有3个苹果，你有12个！", "official", "我 有 3 个 苹 果 你 有 12 个"),
        ("我有3个苹果，你有12个！", "read", "我 有 三 个 苹 果 你 有 十 二 个"),
        # Latin words stay words; punctuation inside them splits them; upper case is lowered
        ("我用GPT-4写Code。", "official", "我 用 gpt 4 写 code"),
        ("我用GPT-4写Code。", "read", "我 用 gpt 四 写 code"),
        ("《三体》：刘慈欣", "official", "三 体 刘 慈 欣"),
        ("。。！", "official", ""),
    ],
)
def test_normalize_chinese(text, mode, expected):
    assert normalize_text(text, "zh", zh_digits=mode) == expected


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "零"),
        (7, "七"),
        (10, "十"),
        (15, "十五"),
        (20, "二十"),
        (101, "一百零一"),
        (110, "一百一十"),
        (1001, "一千零一"),
        (1010, "一千零一十"),
        (2024, "二千零二十四"),
        (10000, "一万"),
        (10001, "一万零一"),
        (100000, "十万"),
        (120000, "十二万"),
        (12345678, "一千二百三十四万五千六百七十八"),
        (100000001, "一亿零一"),
        (100010000, "一亿零一万"),
        (10**12, "一万亿"),
    ],
)
def test_zh_number_words(n, words):
    assert zh_number_words(n) == words


def test_punctuation_constant_equals_zhon():
    zhon = pytest.importorskip("zhon.hanzi")
    assert HANZI_PUNCTUATION == zhon.punctuation


def test_missing_num2words_is_an_error_not_a_silent_skip(monkeypatch):
    monkeypatch.setitem(sys.modules, "num2words", None)  # makes `import num2words` raise ImportError
    with pytest.raises(NormalizeError, match="pip install num2words"):
        normalize_text("I have 2 cats", "en")
    assert normalize_text("no digits here", "en") == "no digits here"


def test_normalize_rejects_unknown_settings():
    with pytest.raises(NormalizeError, match="unknown scoring language 'fr'"):
        normalize_text("x", "fr")
    with pytest.raises(NormalizeError, match="zh_digits"):
        normalize_text("x", "zh", zh_digits="spell")


# --------------------------------------------------------------------------------------------- WER


def test_official_rates_divide_by_reference_words():
    # ref a b c, hyp a x c d: 1 substitution + 1 insertion over 3 words
    s = score_transcript("A x, c d.", "a b c", None, "en")
    assert s.wer == pytest.approx(2 / 3)
    assert (s.substitutions, s.deletions, s.insertions) == pytest.approx((1 / 3, 0.0, 1 / 3))
    assert s.word_count == 3 and s.errors == 2 and s.loop_flag is False


def test_best_reference_wins_and_ties_go_to_text_norm():
    s = score_transcript("doctor smith", "Dr. Smith", "Doctor Smith", "en")
    assert (s.wer1, s.wer2, s.wer) == pytest.approx((0.5, 0.0, 0.0))
    assert s.ground_truth1 == "dr smith" and s.ground_truth2 == "doctor smith"
    # digits in either reference are read out first, so "3" and "three" agree
    assert score_transcript("three apples", "3 apples", None, "en").wer == 0.0
    # hyp "x y": wer1 = 1 sub / 2 words, wer2 = 2 deletions / 4 words, both 0.5: the tie picks text_norm
    tie = score_transcript("x y", "x q", "x y z w", "en")
    assert tie.wer1 == tie.wer2 == 0.5
    assert tie.word_count == 4 and tie.deletions == 0.5 and tie.substitutions == 0.0
    lower = score_transcript("x y", "x y", "x y z w", "en")
    assert lower.word_count == 2 and lower.wer == 0.0


def test_empty_hypothesis_is_all_deletions():
    s = score_transcript("", "The birch canoe.", None, "en")
    assert s.wer == 1.0 and s.deletions == 1.0 and s.insertions == 0.0 and s.transcription == ""
    assert s.wer_capped == 1.0 and s.word_count == 3


def test_empty_reference_is_an_error():
    with pytest.raises(MetricError, match="empty after normalisation"):
        score_transcript("hello", "?!", "…", "en")


def test_chinese_character_error_rate_and_mixed_words():
    s = score_transcript("今天天起很好", "今天天气很好。", None, "zh")
    assert s.wer == pytest.approx(1 / 6) and s.word_count == 6
    mixed = score_transcript("我用GBT写code", "我用GPT写Code", None, "zh")  # 5 tokens: 我 用 gpt 写 code
    assert mixed.wer == pytest.approx(1 / 5)


def test_loop_guard_caps_and_flags():
    s = score_transcript("a a a a a a a", "a b c", None, "en")  # 1 hit, 2 subs, 4 insertions
    assert s.wer == pytest.approx(6 / 3) and s.errors == 6
    assert s.wer_capped == 1.0 and s.loop_flag is True


def test_aggregate_is_word_count_weighted():
    records = [
        {"wer": 0.5, "word_count": 2, "wer_capped": 0.5},
        {"wer": 0.0, "word_count": 6, "wer_capped": 0.0},
    ]
    assert aggregate_wer(records) == pytest.approx(1 / 8)
    assert aggregate_wer([]) is None


def test_error_counts_match_jiwer_alignment():
    c = error_counts("a b c d e", "a x c e f g")
    assert c.errors == 4 and c.ref_tokens == 5 and c.hyp_tokens == 6
    assert c.wer == pytest.approx(4 / 5)


def test_prompt_echo_counts_as_silence():
    assert strip_prompt_echo("以下是普通话的句子。", "以下是普通话的句子。") == ""
    assert strip_prompt_echo("以下是普通话的句子。今天很好", "以下是普通话的句子。") == "今天很好"
    assert strip_prompt_echo("hello", None) == "hello"


# ------------------------------------------------------------------------------------ drift and stats


def test_minute_wer_places_errors_by_segment_time():
    segs = [Segment(0, 10, "a b c"), Segment(70, 80, "d x f")]
    d = minute_wer("a b c d e f", segs, duration=90.0, language="en")
    assert d["minutes"] == [0, 1] and d["ref_words"] == [3, 3] and d["errors"] == [0, 1]
    assert d["wer"] == pytest.approx([0.0, 1 / 3])
    # deletions go to the minute of the hypothesis word before them
    gap = minute_wer("a b c d e f", [Segment(0, 10, "a b"), Segment(70, 80, "e f")], 90.0, "en")
    assert gap["ref_words"] == [4, 2] and gap["errors"] == [2, 0]
    # nothing heard: deletions spread along the reference over the duration
    silent = minute_wer("a b c d e f", [], 120.0, "en")
    assert silent["errors"] == [3, 3] and silent["wer"] == [1.0, 1.0]


def test_latency_percentiles_and_rtf():
    stats = latency_stats([0.1, 0.2, 0.3, 0.4, 1.0, None])
    assert stats["n"] == 5 and stats["p50"] == pytest.approx(0.3)
    assert stats["p95"] == pytest.approx(0.4 + 0.8 * 0.6)  # linear interpolation at rank 3.8
    rtf = real_time_factor([1.0, 1.0], [1.0, 4.0])
    assert rtf["rtf"] == pytest.approx(2 / 5) and rtf["mean_item_rtf"] == pytest.approx((1 + 0.25) / 2)
    assert real_time_factor([], [])["rtf"] is None


def test_cosine_similarity():
    assert cosine_similarity([1, 0], [1, 1]) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(MetricError, match="zero vector"):
        cosine_similarity([0, 0], [1, 0])
