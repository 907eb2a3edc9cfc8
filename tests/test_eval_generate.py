"""Generation mode on the built-in tiny model: official layout, seeds and timings recorded, RTF, latency."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.eval.generate import GenerateConfig, item_seed
from mgm_omni.eval.options import EvalOptions
from mgm_omni.eval.runner import run
from mgm_omni.eval.scoring import ScoreConfig

pytest.importorskip("tokenizers")
SPLIT = "long_tts_eval_en"


def test_generate_then_score_records_timings(tiny_cache, one_thread, tmp_path):
    data, out = tmp_path / "data", tmp_path / "ours"
    data.mkdir()
    items = [{"id": "g1", "text": "Short test."}, {"id": "g2", "text": "Another one."}]
    (data / f"{SPLIT}.jsonl").write_text("\n".join(json.dumps(r) for r in items))
    hyp = tmp_path / "hyp.jsonl"  # the tiny model speaks noise: score fixed transcripts instead of judging it
    hyp.write_text("\n".join(json.dumps({"id": r["id"], "text": r["text"]}) for r in items))
    opts = EvalOptions(
        data_path=str(data),
        output_dir=str(out),
        splits=(SPLIT,),
        hypotheses=str(hyp),
        score=ScoreConfig(judge="none"),
        generate=GenerateConfig(model="tiny-random", max_rows=24, seed=7, attempts=2),
    )
    summary = run(opts)["splits"][SPLIT]
    for r in items:
        wav = out / "samples" / SPLIT / f"{r['id']}.wav"
        info = sf.info(wav)
        assert info.samplerate == 24000 and info.frames > 0
        timing = json.loads((out / "timings" / SPLIT / f"{r['id']}.json").read_text())
        assert timing["seed"] == item_seed(7, r["id"]) and timing["model"] == "tiny-random"
        assert timing["first_packet_seconds"] > 0 and timing["audio_seconds"] == pytest.approx(info.duration)
    assert summary["n_scored"] == 2 and summary["wer"] == 0.0
    assert summary["rtf"]["n"] == 2 and summary["rtf"]["rtf"] > 0
    fp = summary["first_packet_seconds"]
    assert fp["n"] == 2 and 0 < fp["p50"] <= fp["p95"]
    assert (out / "eval" / "latency.png").stat().st_size > 0
    # resume: nothing is generated again and the summary is unchanged
    stamps = {p: p.stat().st_mtime_ns for p in (out / "samples" / SPLIT).glob("*.wav")}
    assert run(opts)["splits"][SPLIT] == summary
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_per_item_voice_that_cannot_be_cloned_is_counted_not_fatal(tiny_cache, one_thread, tmp_path):
    # seed-tts lists name a reference clip per item, cloned through the model's own reference front-end; a clip it
    # refuses (here: silence) fails that item only, and the rest still runs
    data, out = tmp_path / "data", tmp_path / "ours"
    data.mkdir()
    sf.write(data / "ref.wav", np.zeros(16000, np.float32), 16000)
    (data / "en.lst").write_text("c1|a reference|ref.wav|Clone me.\nbad|line\n")
    opts = EvalOptions(
        data_path=str(data),
        output_dir=str(out),
        splits=("en",),
        score=ScoreConfig(judge="x"),
        generate=GenerateConfig(max_rows=8, attempts=1),
        plots=False,
    )
    s = run(opts)["splits"]["en"]
    assert s["counts"]["missing_audio"] == 1 and s["counts"]["bad_input"] == 1 and s["n_scored"] == 0
    assert len(s["notes"]) == 1 and "en/c1: generation failed:" in s["notes"][0]
    assert "reference audio is silent" in s["notes"][0]
    assert not list((out / "samples" / "en").glob("*"))
