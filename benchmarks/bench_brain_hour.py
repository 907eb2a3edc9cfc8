"""Hour-long audio through one ``mgm-omni transcribe`` call: peak RSS, whole transcript, the last minute heard.

``build`` writes a 16 kHz mono WAV of ``--minutes`` (default 65) from the corpus's English ``dev_speakers``
utterances (speakers never trained on), then, when those run out (about 46 minutes of distinct sentences),
``dev`` and ``test`` utterances (training speakers, sentences never trained on); each sentence is used once,
with 0.3-0.7 s of silence between them. 40 s before the end it puts one sentence that occurs nowhere in the
corpus (``LAST_SENTENCE``, spoken by the dev voice flite ``rms``). ``run`` transcribes that file in one CLI call (a child process: its peak RSS comes from
``wait4``) and scores it: the whole transcript's WER against the joined reference (the judge's normalisation),
whether the last-minute sentence appears exactly (normalised), and the WER of the hypothesis span that matches
it best.

    nice -n 19 .venv/bin/python benchmarks/bench_brain_hour.py build [--minutes 65]
    nice -n 19 .venv/bin/python benchmarks/bench_brain_hour.py run [--threads 1] [-- extra transcribe args]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import describe_cpu  # noqa: E402
from mgm_omni.eval.normalize import normalize_text  # noqa: E402

SR = 16000
LAST_SENTENCE = "The violet submarine carried eleven pineapples to the lighthouse keeper on a quiet Tuesday."
OUT = ROOT / "outputs" / "brain_hour"


def corpus_rows(corpus: Path) -> list[dict]:
    files = [corpus / "manifest.jsonl", *sorted((corpus / "shards").glob("*.jsonl"))]
    rows = {}
    for f in files:
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows[r["id"]] = r
    return list(rows.values())


def render_flite(text: str, voice: str = "rms") -> np.ndarray:
    """``text`` spoken by flite ``voice`` as 16 kHz float32 samples."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "s.wav")
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", out], check=True, capture_output=True)
        audio, sr = sf.read(out, dtype="float32")
    if sr != SR:
        raise SystemExit(f"flite {voice} wrote {sr} Hz, expected {SR}")
    return audio


def build(corpus: Path, minutes: float, out_dir: Path, seed: int) -> Path:
    from mgm_omni.audio import load_audio

    rows = corpus_rows(corpus)
    needle = normalize_text(LAST_SENTENCE, "en")
    if any(needle in normalize_text(r["text"], r["lang"]) for r in rows if r["lang"] == "en"):
        raise SystemExit("LAST_SENTENCE occurs in the corpus: pick another")
    def shuffled(split: str) -> list[dict]:
        pool = [r for r in rows if r["split"] == split and r["kind"] == "utterance" and r["lang"] == "en"]
        return sorted(pool, key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest())

    pool = shuffled("dev_speakers") + shuffled("dev") + shuffled("test")  # never-trained sentences
    seen, unique = set(), []
    for r in pool:
        key = normalize_text(r["text"], "en")
        if key and key not in seen and needle not in key:
            seen.add(key)
            unique.append(r)
    total = int(minutes * 60 * SR)
    last = render_flite(LAST_SENTENCE)
    last_at = total - int(40 * SR)  # inside the last minute, 40 s before the end
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = out_dir / f"hour{minutes:g}.wav"
    segments, at = [], 0
    with sf.SoundFile(wav, "w", SR, 1, "PCM_16") as f:
        def put(samples: np.ndarray, seg: dict) -> None:
            nonlocal at
            f.write(samples)
            segments.append({**seg, "start": round(at / SR, 3), "end": round((at + len(samples)) / SR, 3)})
            at += len(samples)

        def gap() -> None:
            nonlocal at
            n = int(rng.uniform(0.3, 0.7) * SR)
            f.write(np.zeros(n, dtype=np.float32))
            at += n

        def silence_to(end: int) -> None:
            nonlocal at
            if end > at:
                f.write(np.zeros(end - at, dtype=np.float32))
                at = end

        it = iter(unique)
        for limit in (last_at, total):  # utterances up to the last sentence's slot, then up to the end
            for r in it:
                wave, _ = load_audio(corpus / r["audio"], sample_rate=SR)
                wave = wave.float().flatten().numpy()
                if at + len(wave) > limit:
                    break  # this one does not fit: silence up to the limit
                put(wave, {"id": r["id"], "speaker": r["speaker"], "text": r["text"]})
                gap()
            else:
                raise SystemExit(f"the dev-speaker pool ran out at {at / SR / 60:.1f} min")
            silence_to(limit)
            if limit == last_at:
                put(last, {"id": "last-minute", "speaker": "rms", "text": LAST_SENTENCE})
                gap()
    ref = {"wav": str(wav), "seconds": at / SR, "last_sentence": LAST_SENTENCE, "segments": segments}
    (out_dir / f"hour{minutes:g}.json").write_text(json.dumps(ref, indent=1) + "\n")
    last_seg = next(s for s in segments if s["id"] == "last-minute")
    print(f"wrote {wav}: {at / SR / 60:.2f} min, {len(segments)} sentences; the last-minute sentence at "
          f"{last_seg['start']:.1f}-{last_seg['end']:.1f} s")
    return wav


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def best_span(hyp: list[str], ref: list[str], slack: int = 3) -> tuple[float, str]:
    """The hypothesis span (any start, length within ``slack`` of the reference) with the lowest WER."""
    best, where = float(len(ref)), ""
    for n in range(max(1, len(ref) - slack), len(ref) + slack + 1):
        for s in range(0, max(1, len(hyp) - n + 1)):
            d = edit_distance(ref, hyp[s:s + n])
            if d < best:
                best, where = d, " ".join(hyp[s:s + n])
    return best / len(ref), where


def score(ref: dict, transcript: str) -> dict:
    hyp_norm = normalize_text(transcript, "en")
    needle = normalize_text(ref["last_sentence"], "en")
    full_ref = " ".join(s["text"] for s in ref["segments"])
    from mgm_omni.eval.metrics import error_counts

    wer_all = error_counts(normalize_text(full_ref, "en"), hyp_norm).wer
    span_wer, span = best_span(hyp_norm.split(), needle.split())
    return {"reference_words": len(normalize_text(full_ref, "en").split()), "transcript_words": len(hyp_norm.split()),
            "wer_whole": round(wer_all, 4), "last_sentence_exact": f" {needle} " in f" {hyp_norm} ",
            "last_sentence_best_span_wer": round(span_wer, 4), "last_sentence_best_span": span}


def run(wav: Path, threads: int, extra: list[str], out_dir: Path, tag: str) -> None:
    ref = json.loads(wav.with_suffix(".json").read_text())
    cmd = [str(ROOT / ".venv" / "bin" / "mgm-omni"), "transcribe", str(wav), "--threads", str(threads), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"CPU: {describe_cpu()}; {threads} thread(s); nice {os.nice(0)}")
    print("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    stem = out_dir / f"{wav.stem}.{tag}"
    with open(f"{stem}.transcript.txt", "w") as so, open(f"{stem}.log", "w") as se:
        child = subprocess.Popen(cmd, stdout=so, stderr=se, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    transcript = Path(f"{stem}.transcript.txt").read_text()
    log_tail = Path(f"{stem}.log").read_text().strip().splitlines()[-1:]
    report = {"cpu": describe_cpu(), "threads": threads, "nice": os.nice(0), "audio_minutes": ref["seconds"] / 60,
              "exit_status": os.waitstatus_to_exitcode(status), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
              "wall_s": round(wall, 1), "rtf_wall": round(wall / ref["seconds"], 3),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "rtf_cpu": round((usage.ru_utime + usage.ru_stime) / ref["seconds"], 3),  # fair under contention
              "cli_summary": log_tail[0] if log_tail else "", "extra_args": extra, **score(ref, transcript)}
    Path(f"{stem}.report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["build", "run", "score"])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    ap.add_argument("--minutes", type=float, default=65.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tag", default="cli", help="names this run's transcript, log and report files")
    ap.add_argument("extra", nargs="*", help="further `mgm-omni transcribe` arguments (after --)")
    args = ap.parse_args()
    wav = args.out / f"hour{args.minutes:g}.wav"
    if args.action == "build":
        build(args.corpus, args.minutes, args.out, args.seed)
    elif args.action == "run":
        if not wav.is_file():
            raise SystemExit(f"{wav} not found: run `build --minutes {args.minutes:g}` first")
        run(wav, args.threads, args.extra, args.out, args.tag)
    else:
        ref = json.loads(wav.with_suffix(".json").read_text())
        print(json.dumps(score(ref, (args.out / f"{wav.stem}.{args.tag}.transcript.txt").read_text()), indent=1))


if __name__ == "__main__":
    main()
