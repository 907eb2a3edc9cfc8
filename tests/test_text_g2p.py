"""Grapheme-to-phoneme: text normalisation (EN, ZH numbers), language spans, espeak-ng and pypinyin readings."""

from __future__ import annotations

import pytest

from mgm_omni.text.errors import TextError
from mgm_omni.text.g2p import (
    ENGLISH_INVENTORY,
    MANDARIN_INVENTORY,
    G2P,
    G2PConfig,
    G2PError,
    phoneme_string,
    pypinyin_symbols,
    split_syllable,
)
from mgm_omni.text.normalize import Span, normalize
from mgm_omni.text.normalize_en import normalize_numbers_en
from mgm_omni.text.normalize_zh import cardinal_zh, normalize_numbers_zh


@pytest.fixture(scope="module")
def g2p():
    return G2P()


@pytest.mark.parametrize(
    "n, text",
    [(0, "零"), (10, "十"), (15, "十五"), (20, "二十"), (101, "一百零一"), (110, "一百一十"), (1005, "一千零五"),
     (1050, "一千零五十"), (10086, "一万零八十六"), (100000, "十万"), (110000, "十一万"),
     (100010000, "一亿零一万"), (10000010, "一千万零一十"), (2 * 10**12 + 3, "二万亿零三")],
)
def test_chinese_cardinals(n, text):
    assert cardinal_zh(n) == text


def test_chinese_number_forms():
    assert normalize_numbers_zh("2024年有2个人和12个苹果") == "二零二四年有两个人和十二个苹果"
    assert normalize_numbers_zh("3.14和50%和1/3和-4和0086") == "三点一四和百分之五十和三分之一和负四和零零八六"
    with pytest.raises(TextError):
        cardinal_zh(-1)


def test_english_number_forms():
    out = normalize_numbers_en("Mr. Smith paid $5.50 at 3:05 on the 21st, in 1999; 1,200 people; 50% & pages 3-5.")
    words = " ".join(out.split())
    assert words == ("mister Smith paid five dollars fifty cents at three oh five on the twenty first , in "
                     "nineteen ninety nine ; one thousand two hundred people; fifty percent and pages three to five .")


def test_spans_and_marks():
    assert normalize("Hi, 我有3个apple.") == [Span("en", "Hi"), ",", Span("zh", "我有三个"), Span("en", "apple"), "."]
    # strongest mark of a run; a line break ends a sentence; quotes dropped; leading marks dropped
    assert normalize('...Wait?! "Yes"\nno,\n(fine)') == [
        Span("en", "Wait"), "?", Span("en", "Yes"), ".", Span("en", "no"), ".", Span("en", "fine"), ","]
    assert normalize("今天，天气好！") == [Span("zh", "今天"), ",", Span("zh", "天气好"), "!"]
    assert normalize("123") == [Span("en", "one hundred and twenty three")]
    assert normalize("123", default_lang="zh") == [Span("zh", "一百二十三")]
    with pytest.raises(TextError):
        normalize(b"bytes")
    with pytest.raises(TextError):
        normalize("x", default_lang="fr")


def test_english_known_words(g2p):
    assert phoneme_string(g2p("Hello, world!")) == "həlˈoʊ, wˈɜːld!"
    assert g2p("Hello")[0] == ("en:h", "en:ə", "en:l", "en:ˈoʊ")
    assert phoneme_string(g2p("The birch canoe slid.")) == "ðə bˈɜːtʃ kənˈuː slˈɪd."


def test_mandarin_tones(g2p):
    assert g2p("你好。") == [("zh:n", "zh:i3", "zh:h", "zh:ao3"), "."]
    assert phoneme_string(g2p("中国银行")) == "zhong1guo2yin2hang2"
    assert phoneme_string(g2p("行走")) == "xing2zou3"  # the polyphone 行 by its phrase
    assert phoneme_string(g2p("他的书")) == "ta1de5shu1"  # neutral tone is 5
    assert phoneme_string(G2P(G2PConfig(zh_tone_sandhi=True))("你好")) == "ni2hao3"
    assert split_syllable("er2") == ("zh:er2",) and split_syllable("n2") == ("zh:n2",)
    with pytest.raises(G2PError):
        split_syllable("zhong")


def test_pypinyin_symbols_are_in_the_inventory():
    assert set(pypinyin_symbols()) <= set(MANDARIN_INVENTORY)


def test_unseen_words_get_phonemes(g2p):
    units = g2p("Zorblaxian flimpertons grooved quixotically past Brzęczyszczykiewicz.")
    words = [u for u in units if not isinstance(u, str)]
    assert len(words) == 6 and all(len(w) >= 2 for w in words) and units[-1] == "."
    assert {s for w in words for s in w} <= set(ENGLISH_INVENTORY)
    # a rare Han character still reads with a tone
    assert g2p("龘") == [("zh:d", "zh:a2")]


def test_mixed_language(g2p):
    units = g2p("我用iPhone拍照, it costs 5 dollars，很贵!")
    langs = [u if isinstance(u, str) else u[0][:2] for u in units]
    runs = [lang for i, lang in enumerate(langs) if i == 0 or lang != langs[i - 1]]
    assert runs == ["zh", "en", "zh", ",", "en", ",", "zh", "!"]  # the 5 is read in English, the ， is a pause
    assert phoneme_string(units) == "wo3yong4 ˈaɪ fˈoʊn pai1zhao4, ɪt kˈɔsts fˈaɪv dˈɑːlɚz, hen3gui4!"


def test_unspeakable_input(g2p):
    assert g2p("") == [] and g2p("... ,, 😀 Привет") == []
    with pytest.raises(TextError):
        g2p(None)
    with pytest.raises(G2PError):
        G2PConfig(en_voice="en us")
    with pytest.raises(G2PError):
        G2PConfig(default_lang="de")
