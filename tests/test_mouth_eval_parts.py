"""The mouth evaluation's pieces on hand-made inputs: item choice, the cloning score, long-form windows, goals."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mgm_omni.eval.cloning import cloning_summary, identify, speaker_centroids
from mgm_omni.eval.long_windows import anchored_span, edge_windows, prefix_edit_distances, score_window
from mgm_omni.eval.metrics import MetricError
from mgm_omni.eval.mouth_items import DevCorpus, MouthEvalError
from mgm_omni.eval.mouth_report import _goal

# ------------------------------------------------------------------------------------------------ items


def _row(i, speaker, lang, duration, split="dev_speakers", text=None, **kw):
    return {"id": f"{speaker}-{lang}-{i}", "audio": f"a/{speaker}-{i}.flac", "text": text or f"{speaker} {lang} {i}.",
            "lang": lang, "speaker": speaker, "split": split, "duration": duration, **kw}


@pytest.fixture
def manifest(tmp_path):
    rows = [_row(i, "a", "en", 2.0 + 0.5 * i) for i in range(8)]  # 2..5.5 s: four 3-15 s prompts
    rows += [_row(i, "b", "en", 4.0) for i in range(3)] + [_row(i, "b", "zh", 4.0) for i in range(4)]
    rows += [_row(0, "c", "en", 4.0, split="train")]  # another split: never used
    rows += [_row(9, "a", "en", 4.0, text="a en 0.")]  # the same sentence as a-en-0: never its prompt
    segs = [{"start": 10.0 * k, "end": 10.0 * k + 8, "text": f"Sentence {k}."} for k in range(5)]
    rows += [_row(0, "b", "en", 50.0, kind="longform", text="x", segments=segs)]
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_items_are_spread_over_speakers_and_clone_another_clip_of_the_same_speaker(manifest):
    corpus = DevCorpus.read(manifest)
    assert corpus.speakers() == ["a", "b"] and corpus.speakers("zh") == ["b"]
    items = corpus.clone_items({"en": 6, "zh": 2})
    assert [i.target.lang for i in items] == ["en"] * 6 + ["zh"] * 2
    en = [i.target.speaker for i in items[:6]]
    assert en.count("a") == 3 and en.count("b") == 3
    for it in items:
        assert it.prompt.speaker == it.target.speaker and it.prompt.lang == it.target.lang
        assert it.prompt.id != it.target.id and it.prompt.text != it.target.text
        assert 3.0 <= it.prompt.duration <= 15.0 and 1.5 <= it.target.duration <= 12.0
    assert len({i.prompt.id for i in items if i.target.speaker == "a"}) > 1  # prompts rotate
    assert corpus.clone_items({"en": 6, "zh": 2}) == items  # deterministic
    assert DevCorpus.read(manifest, seed=1).clone_items({"en": 6, "zh": 2}) != items


def test_identity_clips_leave_out_the_targets_and_too_many_items_are_refused(manifest):
    corpus = DevCorpus.read(manifest)
    items = corpus.clone_items({"en": 4, "zh": 0})
    clips = corpus.speaker_clips(3, items)
    targets = {i.target.id for i in items}
    assert set(clips) == {"a", "b"} and all(len(v) == 3 for v in clips.values())
    assert not targets & {c.id for v in clips.values() for c in v}
    with pytest.raises(MouthEvalError, match="only"):
        corpus.clone_items({"zh": 5})  # 4 zh clips of one speaker
    with pytest.raises(MouthEvalError, match="no 'fr'"):
        corpus.clone_items({"fr": 1})


def test_the_long_text_is_cut_after_the_last_sentence_its_source_ends_within_the_limit(manifest):
    long = DevCorpus.read(manifest).longform("en", max_seconds=30.0)
    assert (long.text, long.seconds, long.sentences, long.speaker) == ("Sentence 0. Sentence 1. Sentence 2.", 28.0, 3, "b")
    with pytest.raises(MouthEvalError, match="long-form"):
        DevCorpus.read(manifest).longform("zh")


# ------------------------------------------------------------------------------------------------ cloning


def test_each_output_is_scored_against_every_speaker_identity():
    rng = np.random.default_rng(0)
    axes = {s: rng.normal(size=16) for s in "xyz"}
    clips = {s: [a + 0.3 * rng.normal(size=16) for _ in range(4)] for s, a in axes.items()}
    cents = speaker_centroids(clips)
    assert all(abs(np.linalg.norm(c) - 1) < 1e-12 for c in cents.values())
    good = [identify(axes[s] + 0.2 * rng.normal(size=16), s, cents) for s in "xyz"]
    bad = identify(axes["y"], "x", cents)  # sounds like y, should be x
    assert all(i.correct for i in good) and not bad.correct and bad.best_other[0] == "y"
    summary = cloning_summary(good + [bad])
    assert summary["share_own_top"] == 0.75 and summary["per_speaker"]["x"] == {"n": 2, "share_own_top": 0.5}
    assert cloning_summary([i.as_dict() for i in good + [bad]])["share_own_top"] == 0.75
    own = np.mean([i.own for i in good + [bad]])
    assert summary["mean_cos_own"] == pytest.approx(own, abs=1e-4)
    with pytest.raises(MetricError, match="two speakers"):
        speaker_centroids({"x": clips["x"]})


# ------------------------------------------------------------------------------------------------ long form


def test_prefix_edit_distances_agree_with_jiwer():
    import jiwer

    rng = random.Random(0)
    words = "a b c d e f".split()
    for _ in range(20):
        ref = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        hyp = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        dist = prefix_edit_distances(ref, hyp, len(ref))
        for j in range(1, len(ref) + 1):
            out = jiwer.process_words(" ".join(ref[:j]), " ".join(hyp))
            assert dist[j] == out.substitutions + out.deletions + out.insertions


def _w(i: int) -> str:
    return "w" + "abcdefghij"[i // 10] + "abcdefghij"[i % 10]  # letters only: digits would become number words


def test_windows_match_the_anchored_stretch_of_the_text():
    text = " ".join(_w(i) for i in range(100)) + "."
    # 100 words over 100 s; the first 20 s says words 0..19 with one wrong, the last says 81..99
    said = [_w(i) for i in range(20)]
    said[5] = "zzz"
    first = score_window(" ".join(said), text, "en", "start", 0, 20, 100)
    assert (first.ref_tokens, first.errors, first.wer) == (20, 1, 0.05)
    last = score_window(" ".join(_w(i) for i in range(81, 100)), text, "en", "end", 80, 100, 100)
    assert (last.ref_tokens, last.errors) == (19, 0)  # the free end moved to where the window was cut
    # an output that stopped early: its last window does not end with the text's last words
    early = score_window(" ".join(_w(i) for i in range(40, 60)), text, "en", "end", 80, 100, 100)
    assert early.wer == 1.0
    silent = score_window("", text, "en", "start", 0, 20, 100)
    assert (silent.ref_tokens, silent.wer) == (14, 1.0)  # the stretch cannot shrink below (1 - slack) x 20
    zh = score_window("今天天气很好", "今天天气很好，我们去公园。", "zh", "start", 0, 5, 10)
    assert (zh.ref_tokens, zh.errors) == (6, 0)


def test_window_errors():
    assert anchored_span(["a", "b", "c"], ["b", "c"], "end", 1, 3) == (2, 0)
    assert edge_windows(30.0, 60.0) == [(0.0, 30.0, "start"), (0.0, 30.0, "end")]
    with pytest.raises(MetricError, match="anchor"):
        anchored_span(["a"], ["a"], "middle", 1, 1)
    with pytest.raises(MetricError, match="inside"):
        score_window("a", "a b", "en", "start", 0, 20, 10)


def test_goals_are_met_only_on_a_measured_value():
    assert _goal(0.19, "en_wer")["met"] is True and _goal(0.21, "en_wer")["met"] is False
    assert _goal(0.8, "cloning_share_own_top")["met"] is True and _goal(0.79, "cloning_share_own_top")["met"] is False
    assert _goal(None, "rtf")["met"] is None
    assert _goal(1.0, "longform_last_over_first_wer", "first minute unintelligible")["met"] is None
