"""``mgm-omni transcribe``: audio (or a video's audio track) of any length -> the MLLM's text, streamed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgm_omni.cli.common import DEFAULT_MLLM, TINY_MODEL, CLIError

TOKENS_PER_AUDIO_SECOND = 4.0  # speech is about 2.5-3 words a second: the first guess of a transcript's length


def run(args: argparse.Namespace) -> int:
    if not Path(args.audio).is_file():
        raise CLIError(f"audio file not found: {args.audio}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CLIError("--max-new-tokens must be >= 1")
    import torch

    from mgm_omni.audio import load_audio
    from mgm_omni.cli.progress import JobBar, TextProgress
    from mgm_omni.generation.mllm.runner import MLLM
    from mgm_omni.generation.mllm.transcriber import TranscribeConfig, Transcriber
    from mgm_omni.generation.sampling import SamplingConfig
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location

    model = default_mllm() if args.model == DEFAULT_MLLM else args.model
    if model == TINY_MODEL:
        print(f"NOTE: no trained MLLM is available on this machine, so this runs on a tiny RANDOM model "
              f"('{TINY_MODEL}'): the text is gibberish. Pass --model with an MGM-Omni checkpoint.", file=sys.stderr)
    wave, _ = load_audio(args.audio, sample_rate=16000, channel=0)  # channel 0, as the official loader
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if model == TINY_MODEL else torch.bfloat16)
    mllm = MLLM.from_pretrained(mllm_location(model), dtype=dtype, device=args.device, towers=("audio",))
    config = TranscribeConfig(prompt=args.prompt, sampling=SamplingConfig(temperature=args.temperature),
                              max_new_tokens=args.max_new_tokens, trim_padding=args.trim_padding, seed=args.seed)
    transcriber = Transcriber(mllm, config)
    seconds = wave.shape[0] / 16000
    budget = config.budget(wave.shape[0])
    bar = JobBar(f"encoding {seconds:.0f} s of audio")
    progress = TextProgress(bar, round(seconds * TOKENS_PER_AUDIO_SECOND), budget)
    try:
        progress.on_tokens(0)
        prepared = transcriber.prepare(wave)
        bar.describe("transcribing")
        for step in transcriber.decode(prepared):
            bar.text(step.text)
            progress.on_tokens(prepared.stats.text_tokens)
        progress.finish()
        bar.end_text()
    finally:
        bar.close()
    s = prepared.stats
    print(f"{s.audio_seconds:.1f} s of audio -> {s.audio_tokens} audio tokens -> {s.text_tokens} text tokens "
          f"in {s.seconds:.2f} s ({s.finish_reason}; budget {s.budget}"
          + (f"; {s.loops} segment(s) stopped in a loop" if s.loops else "") + ")", file=sys.stderr)
    return 0
