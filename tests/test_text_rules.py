"""Text rules of the spec: sentence ends, skippable (markdown/whitespace) tokens, CJK detection, and the
reference-transcript finishing (with optional Traditional->Simplified conversion)."""

from __future__ import annotations

import pytest

from mgm_omni.text import (
    TextError,
    contains_cjk,
    finish_reference_transcript,
    is_cjk_char,
    is_sentence_end,
    is_skippable,
    load_t2s_converter,
)



def test_sentence_end():
    for text in [".", ".\n\n", "?", "!", ";", "。", "？", "！", "；", "...", "\n", "\n\n", " world\n", "。”"]:
        assert is_sentence_end(text), text
    for text in ["", " world", "Mr", ",", "，", "：", " .", "a.", "\r", "”。"]:
        assert not is_sentence_end(text), text


def test_skippable():
    for text in ["", " ", "\n", "\n\n", "**", "##", " #", "*\n", "  \n*#"]:
        assert is_skippable(text), repr(text)
    for text in ["\t", "\r\n", "-", " a", "**Traffic", "。", "\u3000"]:
        assert not is_skippable(text), repr(text)


def test_cjk():
    assert contains_cjk("abc 中 def") and contains_cjk("\u4e00") and contains_cjk("\u9fff")
    assert not contains_cjk("") and not contains_cjk("こんにちは 안녕") and not contains_cjk("\u3400")
    for ch in "中\u3400あアㄱ가\uf900\U00020000":
        assert is_cjk_char(ch), hex(ord(ch))
    for ch in "a1 ，。!é\u3000":
        assert not is_cjk_char(ch), hex(ord(ch))
    with pytest.raises(TextError, match="one character"):
        is_cjk_char("ab")


def test_finish_reference_transcript():
    assert finish_reference_transcript(" hello world") == "Hello world."
    assert finish_reference_transcript("Is it?") == "Is it?"
    assert finish_reference_transcript(" wow!") == "Wow!"
    assert finish_reference_transcript("ok.  ") == "Ok."
    assert finish_reference_transcript(" 今天天气很好") == "今天天气很好。"
    assert finish_reference_transcript("你好吗？") == "你好吗？"
    assert finish_reference_transcript("Hello 世界.") == "Hello 世界.。"  # CJK rule wins, as officially
    assert (
        finish_reference_transcript("今天天氣很好", to_simplified=lambda s: s.replace("氣", "气"))
        == "今天天气很好。"
    )
    assert finish_reference_transcript("abc", to_simplified=lambda s: "X") == "Abc."  # latin text: no t2s
    for bad in ["", "  \n "]:
        with pytest.raises(TextError, match="empty"):
            finish_reference_transcript(bad)
    with pytest.raises(TextError, match="must be str"):
        finish_reference_transcript(b"bytes")


def test_t2s_converter_if_installed():
    convert = load_t2s_converter()
    if convert is None:
        pytest.skip("opencc not installed (optional): Traditional->Simplified conversion is off")
    assert (
        finish_reference_transcript("今天天氣很好,我們一起去公園散步吧", convert)
        == "今天天气很好,我们一起去公园散步吧。"
    )
