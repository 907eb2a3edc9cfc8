"""Corpus builder pieces without TTS: sentence filters and sources, splits, audio post-processing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mgm_omni.data import postprocess as pp
from mgm_omni.data.config import ConfigError, CorpusConfig, load_config
from mgm_omni.data.splits import sentence_split
from mgm_omni.data.text_sources import FORTUNES_DIR, SourceError, keep_en, keep_zh, load_sentences, normalise_zh


def test_english_filter():
    assert keep_en("The birch canoe slid on the smooth planks.")
    assert not keep_en("Too short here.")  # 3 words
    assert not keep_en("the lower case start is not allowed here.")
    assert not keep_en("NASA sent a probe to the moon.")  # all-caps word
    assert not keep_en("It costs 5 dollars at the shop.")  # digits
    assert not keep_en("No final punctuation in this one")


def test_mandarin_filter_keeps_simplified_only():
    assert keep_zh("今天天气很好，我们一起去公园散步吧。")
    assert not keep_zh("今天天氣很好，我們一起去公園散步吧。")  # traditional
    assert not keep_zh("你好。")  # too short
    assert not keep_zh("我用Linux已经很多年了。")  # Latin letters
    assert normalise_zh("今天 天气很好,我们去吧!") == "今天天气很好，我们去吧！"


@pytest.mark.skipif(not (FORTUNES_DIR / "chinese").exists(), reason="fortunes-zh is not installed")
def test_fortunes_zh_source_is_clean():
    zh = load_sentences({"zh": ("fortunes-zh",)})["zh"]
    assert len(zh) > 1000
    assert all("\x1b" not in s.text and keep_zh(s.text) for s in zh)
    assert len({s.text for s in zh}) == len(zh)  # deduplicated
    assert all(s.source == "fortunes-zh:chinese" and s.line >= 1 for s in zh)


def test_file_source_dedupes_and_empty_source_is_an_error(tmp_path):
    f = tmp_path / "en.txt"
    f.write_text("The cat sat on the mat.\nthe cat  sat on the MAT.\nThe Cat sat on the mat!\nA dog ran past us.\n")
    (en,) = load_sentences({"en": (f"file:{f}",)}).values()
    assert [s.text for s in en] == ["The cat sat on the mat.", "A dog ran past us."]
    assert [s.line for s in en] == [1, 4]
    f.write_text("too short.\n")
    with pytest.raises(SourceError, match="no usable sentence"):
        load_sentences({"en": (f"file:{f}",)})
    with pytest.raises(SourceError, match="unknown"):
        load_sentences({"en": ("nonsense",)})


def test_sentence_split_is_stable_and_balanced():
    texts = [f"Sentence number {i} is here." for i in range(4000)]
    splits = [sentence_split(t, "en", 0.05, 0.05) for t in texts]
    assert splits == [sentence_split(t, "en", 0.05, 0.05) for t in texts]
    share = {k: splits.count(k) / len(splits) for k in ("train", "dev", "test")}
    assert share["train"] == pytest.approx(0.9, abs=0.02) and share["dev"] == pytest.approx(0.05, abs=0.015)
    # normalised spelling variants of one sentence land in the same split
    assert sentence_split("A dog ran past us.", "en", 0.3, 0.3) == sentence_split("a dog ran past us!", "en", 0.3, 0.3)


def _f0(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (apt-get install sox)")
def test_vtl_warp_scales_frequency_and_keeps_duration():
    sr = 22050
    t = np.arange(2 * sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    y = pp.vtl_warp(x, sr, 1.1)
    assert len(y) == pytest.approx(len(x), rel=0.02)
    assert _f0(y[sr // 4: -sr // 4], sr) == pytest.approx(220, abs=3)
    assert _f0(pp.vtl_warp(x, sr, 0.9)[sr // 4: -sr // 4], sr) == pytest.approx(180, abs=3)


def test_trim_level_and_join():
    sr, cfg = 22050, pp.SignalConfig()
    tone = (0.3 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)).astype(np.float32)
    x = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(2 * sr, np.float32)])
    y = pp.trim(x, sr, cfg)
    assert len(y) == pytest.approx(sr + 2 * cfg.margin_s * sr, abs=0.02 * sr)
    z = pp.level(y, sr, cfg)
    assert 20 * np.log10(np.sqrt(np.mean(z[int(0.1 * sr):-int(0.1 * sr)] ** 2))) == pytest.approx(-20, abs=0.5)
    with pytest.raises(RuntimeError, match="silent"):
        pp.to_corpus(np.zeros(sr, np.float32), sr, cfg)
    out, bounds = pp.join([tone, tone[: sr // 2]], [0.5], sr)
    assert len(out) == sr + sr // 2 + sr // 2
    assert bounds == [(0.0, 1.0), (1.5, 2.0)]


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="nothing to build"):
        CorpusConfig(out=tmp_path, hours={})
    with pytest.raises(ConfigError, match="not both"):
        CorpusConfig(out=tmp_path, hours={"flite/en": 1}, sentences={"flite/en": 3})
    y = tmp_path / "c.yaml"
    y.write_text("out: /tmp/x\nhours: {flite/en: 1}\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown config keys"):
        load_config(y)
    y.write_text("out: /tmp/x\nhours: {flite/en: 1}\nlongform_minutes: [2, 5]\n")
    cfg = load_config(y, hours={"espeak/en": 2}, jobs=2)
    assert cfg.hours == {"flite/en": 1.0, "espeak/en": 2.0} and cfg.jobs == 2 and cfg.longform_minutes == (2, 5)
    assert set(cfg.dev_speakers) == {"rms", "espeak-m7", "kokoro-blend-gnt60-alpha40~vtl0.93"}
