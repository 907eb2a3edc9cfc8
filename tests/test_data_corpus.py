"""The offline corpus builder: a small real build (every installed engine), its manifests, resume, refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.data import Manifest, ManifestRow, PairRow, VoiceError, build_corpus, load_audio, parse_voice
from mgm_omni.data.cli import add_data_parser, main, run_data
from mgm_omni.data.config import CorpusConfig
from mgm_omni.data.engines import missing_engine
from mgm_omni.data.manifest import ManifestError
from mgm_omni.data.splits import check_dev_speakers, sentence_split
from mgm_omni.data.speakers import Speaker
from mgm_omni.data.stats import stats_for_path

FAMILIES = ("espeak", "flite", "festival", "kokoro")
INSTALLED = {f for f in FAMILIES if missing_engine(f) is None}
KOKORO_DEV = "kokoro-blend-alpha50-gnt50"


def _en_sentences() -> list[str]:
    subj = ("The old farmer", "A young pilot", "My sister", "The quiet teacher", "Our new neighbour",
            "The tired doctor", "A clever student", "The small boy")
    verb = ("painted a red barn", "walked to the market", "read a long letter", "cooked a simple dinner",
            "fixed the broken gate", "planted tall trees", "sang an old song", "found a silver coin")
    return [f"{s} {v} before noon." for s in subj for v in verb]  # 64 distinct sentences


def _zh_sentences() -> list[str]:
    subj = ("我的朋友", "这位老师", "我们的邻居", "那个学生", "他的妈妈", "小王")
    act = ("明天要去北京开会", "每天早上都去公园跑步", "喜欢在图书馆看书", "今天晚上请我们吃饭", "正在学习做中国菜",
           "下个月打算去上海旅行")
    return [f"{s}{a}。" for s in subj for a in act]  # 36 distinct sentences


def _roster() -> list[dict]:
    out = []
    if "espeak" in INSTALLED:
        out += [{"voices": {"en": ["espeak:en-us+f3"], "zh": ["espeak:cmn-latn-pinyin+f3"]}},
                {"voice": "espeak:en-us+m7", "pitch": 35}, {"voice": "espeak:en-gb+f2", "vtl": 0.92}]
    if "flite" in INSTALLED:
        out += [{"voice": "flite:kal16"}, {"voice": "flite:awb"}]
    if "festival" in INSTALLED:
        out += [{"voice": "festival:kal_diphone"}, {"voice": "festival:ked_diphone", "speed": 1.15}]
    if "kokoro" in INSTALLED:
        out += [{"voice": "kokoro:jf_alpha"}, {"voice": "kokoro:jf_alpha@0.5+jf_tebukuro@0.5"}]
    return out


def _config(root: Path, **kw) -> CorpusConfig:
    en, zh = root / "en.txt", root / "zh.txt"
    en.write_text("\n".join(_en_sentences()) + "\n", encoding="utf-8")
    zh.write_text("\n".join(_zh_sentences()) + "\n", encoding="utf-8")
    budget = {"espeak/en": 6, "espeak/zh": 3, "flite/en": 4, "festival/en": 2, "kokoro/en": 2, "kokoro/zh": 2}
    sentences = {k: v for k, v in budget.items() if k.split("/")[0] in INSTALLED}
    dev = [d for d, fam in (("awb", "flite"), (KOKORO_DEV, "kokoro")) if fam in INSTALLED]
    args = dict(out=root / "corpus", langs=("en", "zh") if INSTALLED & {"espeak", "kokoro"} else ("en",),
                sentences=sentences, sources={"en": (f"file:{en}",), "zh": (f"file:{zh}",)},
                speakers=_roster(), dev_speakers=tuple(dev), dev_fraction=0.15, test_fraction=0.15,
                longform_count=1 if "espeak" in INSTALLED else 0, longform_minutes=(0.12, 0.2),
                pairs_per_speaker=3, seed=3)
    args.update(kw)
    return CorpusConfig(**args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not INSTALLED:
        pytest.skip("no TTS engine installed (apt-get install espeak-ng flite festival; pip install 'mgm-omni[data]')")
    root = tmp_path_factory.mktemp("data")
    cfg = _config(root)
    report = build_corpus(cfg, progress=False, log=lambda m: None)
    rows = Manifest.read(cfg.out / "manifest.jsonl")
    pairs = Manifest.read(cfg.out / "pairs.jsonl", PairRow)
    return cfg, report, rows, pairs


def test_build_renders_every_installed_family(corpus):
    cfg, report, rows, _ = corpus
    assert report.failed == 0 and report.rendered == report.planned == len(rows) > 0
    assert {r.family for r in rows} == INSTALLED
    build = json.loads((cfg.out / "build.json").read_text())
    assert build["complete"] is True and build["rendered"] == len(rows)
    assert set(build["throughput_audio_s_per_s"]) == INSTALLED
    if "kokoro" in INSTALLED:
        assert {r.lang for r in rows if r.family == "kokoro"} == {"en", "zh"}


def test_rows_match_their_audio(corpus):
    cfg, _, rows, _ = corpus
    for r in rows:
        info = sf.info(str(cfg.out / r.audio))
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        x = load_audio(r, cfg.out)
        assert len(x) == r.num_samples and r.duration == pytest.approx(len(x) / 22050, abs=1e-3)
        assert 0.3 < r.duration < 30 or r.kind == "longform"
        # trimmed: speech within the first and last 0.2 s
        edge = int(0.2 * 22050)
        peak = np.abs(x).max()
        assert np.abs(x[:edge]).max() > 0.01 * peak and np.abs(x[-edge:]).max() > 0.003 * peak
        assert parse_voice(r.voice).identity == r.speaker.split("~")[0]
        assert r.source.startswith("file:") and r.source_line >= 1 and r.builder_version and r.engine_version


def test_transforms_are_recorded(corpus):
    _, _, rows, _ = corpus
    by_speaker = {r.speaker: r for r in rows}
    if "espeak" in INSTALLED:
        assert by_speaker["espeak-m7~p35"].transform == {"p": 35.0}
        assert by_speaker["espeak-f2~vtl0.92"].transform == {"vtl": 0.92}
        assert "vocal-tract-length" in by_speaker["espeak-f2~vtl0.92"].speaker_made
    if "kokoro" in INSTALLED:
        blend = [r for r in rows if r.speaker == KOKORO_DEV]
        assert blend and all("blend" in r.speaker_made for r in blend)


def test_same_speaker_across_engines_shares_an_id(corpus):
    if not {"flite", "festival"} <= INSTALLED:
        pytest.skip("needs flite and festival")
    _, _, rows, _ = corpus
    kal = {r.voice for r in rows if r.speaker == "kal"}
    assert kal == {"flite:kal16", "festival:kal_diphone"}


def test_splits_share_no_sentence_and_dev_speakers_stay_out_of_train(corpus):
    cfg, _, rows, _ = corpus
    texts = {}
    for r in rows:
        for t in [s["text"] for s in r.segments] or [r.text]:
            texts.setdefault(t, set()).add("train" if r.split == "train" else "held")
        if r.split != "dev_speakers" and r.kind == "utterance":
            assert r.split == sentence_split(r.text, r.lang, cfg.dev_fraction, cfg.test_fraction)
    assert all(len(v) == 1 for v in texts.values())
    assert {r.split for r in rows} >= {"train", "dev_speakers"}
    train_speakers = {r.speaker for r in rows if r.split == "train"}
    dev_rows = [r for r in rows if r.speaker in cfg.dev_speakers]
    assert dev_rows and all(r.split == "dev_speakers" for r in dev_rows)
    assert not train_speakers & set(cfg.dev_speakers)
    if "kokoro" in INSTALLED:
        assert {r.lang for r in dev_rows if r.speaker == KOKORO_DEV} == {"en", "zh"}


def test_longform_item_has_sentence_boundaries(corpus):
    if "espeak" not in INSTALLED:
        pytest.skip("espeak-ng is not installed")
    cfg, _, rows, _ = corpus
    (lf,) = [r for r in rows if r.kind == "longform"]
    segs = lf.segments
    assert len(segs) >= 2 and lf.split in ("train", "dev_speakers")
    assert segs[0]["start"] >= 0 and segs[-1]["end"] <= lf.duration + 1e-3
    for a, b in zip(segs, segs[1:]):
        assert a["start"] < a["end"] < b["start"] < b["end"]  # a pause between sentences
        assert a["source_line"] < b["source_line"]  # consecutive sentences of one source, in order
    x = load_audio(lf, cfg.out)
    gap = x[int(segs[0]["end"] * 22050) + 200: int(segs[1]["start"] * 22050) - 200]
    assert len(gap) > 0 and np.abs(gap).max() < 1e-3  # the pause is silence


def test_pairs_are_two_utterances_of_one_speaker(corpus):
    _, _, rows, pairs = corpus
    by_id = {r.id: r for r in rows}
    assert pairs
    for p in pairs:
        ref, tgt = by_id[p.reference_id], by_id[p.target_id]
        assert ref.speaker == tgt.speaker == p.speaker and ref.split == tgt.split == p.split
        assert ref.id != tgt.id and ref.text != tgt.text and ref.kind == "utterance"
    if "espeak" in INSTALLED:
        assert any(p.target_kind == "longform" for p in pairs)


def test_resume_does_not_render_again(corpus):
    cfg, report, rows, _ = corpus
    mtimes = {r.id: os.stat(cfg.out / r.audio).st_mtime_ns for r in rows}
    again = build_corpus(cfg, progress=False, log=lambda m: None)
    assert (again.rendered, again.skipped) == (0, report.planned)
    assert {r.id: os.stat(cfg.out / r.audio).st_mtime_ns for r in rows} == mtimes
    victim = next(r for r in rows if r.kind == "utterance")
    (cfg.out / victim.audio).unlink()
    third = build_corpus(cfg, progress=False, log=lambda m: None)
    assert (third.rendered, third.skipped) == (1, report.planned - 1)
    assert [r.id for r in Manifest.read(cfg.out / "manifest.jsonl")] == [r.id for r in rows]


def test_stats_report(corpus, capsys):
    cfg, _, rows, pairs = corpus
    assert main(["stats", str(cfg.out)]) == 0
    out = capsys.readouterr().out
    assert f"items {len(rows)}" in out and f"speakers {len({r.speaker for r in rows})}" in out
    assert f"pairs {len(pairs)}" in out
    for family in INSTALLED:
        assert f"  {family} " in out
    assert "hours per speaker:" in out and "hours per language:" in out
    assert stats_for_path(cfg.out / "manifest.jsonl") == out.strip()


@pytest.mark.parametrize("voice, message", [
    ("flite:slt", "reserved"), ("festival:cmu_us_slt_arctic_hts", "reserved"), ("kokoro:jm_kumo", "reserved"),
    ("piper:joe", "reserved"), ("kokoro:jf_alpha@0.5+jm_kumo@0.5", "reserved"), ("piper:en_US-lessac", "reserved"),
    ("espeak:cmn", "not allowed"), ("flite:kal", "not allowed"), ("espeak:en-us+croak", "unknown voice"),
    ("espeak:en-us+f3@1", "unknown voice"), ("kokoro:jf_alpha@0.7+jf_nezumi@0.7", "summing to 1"), ("slt", "reserved"),
])
def test_voice_refusals(voice, message):
    with pytest.raises(VoiceError, match=message):
        parse_voice(voice)


def test_allowed_voices_and_identities():
    assert parse_voice("flite:kal16").identity == parse_voice("festival:kal_diphone").identity
    assert parse_voice("kokoro:jf_gongitsune").identity == parse_voice("kokoro:jf_tebukuro").identity
    assert parse_voice("espeak:en-gb-scotland+f4").identity == parse_voice("espeak:cmn-latn-pinyin+f3").identity
    assert parse_voice("kokoro:jf_nezumi@0.5+jf_tebukuro@0.5").identity == "kokoro-gnt"  # one speaker
    assert Speaker({"en": ("espeak:en-us+f3",)}, pitch=70, vtl=1.1).id == "espeak-f3~p70~vtl1.1"
    with pytest.raises(VoiceError, match="different speakers"):
        Speaker({"en": ("flite:kal16", "flite:awb")})
    with pytest.raises(VoiceError, match="does not speak"):
        Speaker({"zh": ("flite:awb",)})
    with pytest.raises(ValueError, match="same person"):
        check_dev_speakers(("awb",), [Speaker({"en": ("flite:awb",)}), Speaker({"en": ("flite:awb",)}, vtl=1.1)])


def _run_cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    return run_data(parser.parse_args(["data", *argv]))


def test_bad_input_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert _run_cli(["build", "--out", str(out), "--voices", "flite:slt", "--sentences", "flite/en=2"]) == 2
    assert "reserved for evaluation" in capsys.readouterr().err
    assert _run_cli(["build", "--out", str(out), "--voices", "espeak:en-us+nope", "--sentences", "espeak/en=2"]) == 2
    assert "unknown voice" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    if "espeak" in INSTALLED:  # these get past the engine check
        assert _run_cli(["build", "--out", str(out), "--voices", "espeak:en-us", "--langs", "en",
                         "--sources-en", f"file:{empty}", "--sentences", "espeak/en=2"]) == 2
        assert "no usable sentence" in capsys.readouterr().err
        assert _run_cli(["build", "--out", str(blocker / "corpus"), "--voices", "espeak:en-us", "--langs", "en",
                         "--sentences", "espeak/en=2"]) == 2
        assert "not writable" in capsys.readouterr().err
    assert _run_cli(["build", "--out", str(out), "--sentences", "nope/en=2"]) == 2
    assert "family/lang" in capsys.readouterr().err
    assert not out.exists()  # no directory, no half-written manifest


def test_manifest_reader_and_writer(tmp_path):
    row = ManifestRow(id="a", audio="a.flac", text="Hi there you all.", lang="en", speaker="kal", family="flite",
                      engine="flite", voice="flite:kal16", speaker_made="voice flite:kal16", transform={},
                      split="train", kind="utterance", duration=1.0, sample_rate=22050, num_samples=22050,
                      source="file:x", source_line=1, engine_version="v", builder_version="b")
    path = tmp_path / "m.jsonl"
    Manifest.write(path, [row, row])
    assert Manifest.read(path) == [row, row] and not list(tmp_path.glob(".*tmp"))
    with open(path, "a") as f:
        f.write('{"id": "cut')  # a crashed append
    assert len(Manifest.read(path, partial_tail=True)) == 2
    with pytest.raises(ManifestError):
        Manifest.read(path)
    first = path.read_text().splitlines()[0]
    path.write_text(json.dumps({**json.loads(first), "extra": 1}) + "\n")
    with pytest.raises(ManifestError, match="unknown fields"):
        Manifest.read(path)
    with pytest.raises(ManifestError, match="cannot read"):
        load_audio(row, tmp_path)


@pytest.mark.skipif("espeak" not in INSTALLED, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_parallel_build_equals_sequential(tmp_path):
    rows = {}
    for jobs in (1, 2):
        cfg = _config(tmp_path, out=tmp_path / f"jobs{jobs}", jobs=jobs, speakers=[{"voice": "espeak:en-us+f3"}],
                      dev_speakers=(), langs=("en",), sentences={"espeak/en": 6}, longform_count=0)
        assert build_corpus(cfg, progress=False, log=lambda m: None).rendered == 6
        rows[jobs] = Manifest.read(cfg.out / "manifest.jsonl")
    assert [(r.id, r.text, r.num_samples) for r in rows[1]] == [(r.id, r.text, r.num_samples) for r in rows[2]]
    for a, b in zip(rows[1], rows[2]):
        np.testing.assert_array_equal(load_audio(a, tmp_path / "jobs1"), load_audio(b, tmp_path / "jobs2"))
