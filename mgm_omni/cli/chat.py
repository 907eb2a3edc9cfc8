"""``mgm-omni chat``: multi-turn omni chat; each reply streams as text and is spoken into an audio file.

The file is opened at a reply's first audio (a reply without speech leaves the last one alone) and every
chunk is written as it is rendered: nothing holds the whole reply's audio, a WAV is valid at every moment,
and Ctrl-C stops the reply and closes the file with what was spoken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mgm_omni.cli.common import DEFAULT_MLLM, DEFAULT_SPEECHLM, TINY_MODEL, CLIError

PROMPT = "you> "
BANNER = "Type a message and press Enter; an empty line or Ctrl-D ends the chat."


def read_turn() -> str | None:
    """One user turn from stdin (a prompt first when a person is typing); ``None`` at the end."""
    interactive = sys.stdin.isatty()
    if interactive:
        print(PROMPT, end="", flush=True)
    line = sys.stdin.readline()
    if not line and interactive:
        print()  # Ctrl-D: leave the shell prompt on a line of its own
    return line.rstrip("\n") if line else None


def _check(args: argparse.Namespace) -> None:
    for flag in ("image_file", "video_file", "audio_file"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise CLIError(f"--{flag.replace('_', '-')}: file not found: {path}")
    if args.image_file and args.video_file:
        raise CLIError("give --image-file or --video-file, not both")
    if args.max_new_tokens < 1 or args.max_rows < 1:
        raise CLIError("--max-new-tokens and --max-rows must be >= 1")
    if not args.no_speech:
        from mgm_omni.cli.output import check_output

        args.out = check_output(args.out)


def run(args: argparse.Namespace) -> int:
    """Media attach to the first turn; each spoken reply overwrites ``--out`` as it is spoken."""
    _check(args)
    from dataclasses import replace

    import torch

    from mgm_omni.audio import load_audio
    from mgm_omni.cli.output import AudioFile
    from mgm_omni.cli.progress import JobBar, TextProgress
    from mgm_omni.cli.speech_report import explain
    from mgm_omni.generation.mllm.runner import MLLM, SHARED_TEXT_IDS
    from mgm_omni.generation.omni import AudioEvent, OmniChat, OmniSettings, TextEvent
    from mgm_omni.generation.sampling import SamplingConfig
    from mgm_omni.generation.speech.chunked_decode import DecodeConfig
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location

    model = default_mllm() if args.model == DEFAULT_MLLM else args.model
    if model == TINY_MODEL:
        print(f"NOTE: no trained MLLM is available on this machine, so this runs on a tiny RANDOM model "
              f"('{TINY_MODEL}'): replies are gibberish. Pass --model with an MGM-Omni checkpoint.", file=sys.stderr)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if model == TINY_MODEL else torch.bfloat16)
    towers = [t for t, on in (("audio", args.audio_file or args.video_file),
                              ("vision", args.image_file or args.video_file)) if on]
    mllm = MLLM.from_pretrained(mllm_location(model), dtype=dtype, device=args.device, towers=towers,
                                temperature=args.temperature)  # top-k/top-p/penalty: generation_config.json
    text_cfg = replace(mllm.config, max_new_tokens=args.max_new_tokens, mask_from=SHARED_TEXT_IDS, seed=args.seed)
    speech = token2wav = voice = None
    tiny_speech, sample_rate, token_rate = False, 24000, 25.0
    if not args.no_speech:
        from mgm_omni.generation import pipeline
        from mgm_omni.hub import resolve_mouth

        mouth = resolve_mouth(None if args.speechlm == DEFAULT_SPEECHLM else args.speechlm)
        speechlm, tiny_speech = mouth.name, mouth.builtin
        if tiny_speech:
            print(f"NOTE: the SpeechLM is the tiny RANDOM '{TINY_MODEL}' model: replies are spoken as noise-like "
                  "audio. Pass --speechlm with an MGM-Omni-TTS checkpoint.", file=sys.stderr)
        from mgm_omni.cli.tts import auto_transcriber, registered_voice

        if args.voice:
            voice = registered_voice(speechlm, args.voices_dir, args.voice)
        tts = pipeline.TTSPipeline.load(mouth.path, voice=voice, ref_audio=args.ref_audio, ref_text=args.ref_text,
                                        cosyvoice_path=args.cosyvoice_path, dtype=args.dtype, device=args.device,
                                        temperature=args.speech_temperature, max_rows=args.max_rows, seed=args.seed,
                                        transcriber=auto_transcriber(args.ref_audio, args.ref_text))
        speech, token2wav, voice = tts.generator, tts.token2wav, tts.voice
        sample_rate, token_rate = tts.sample_rate, tts.mouth.token_rate
    settings = OmniSettings(text=text_cfg, speech=DecodeConfig(
        SamplingConfig(temperature=args.speech_temperature), max_new_rows=args.max_rows, seed=args.seed))
    chat = OmniChat(mllm, speech, token2wav, voice, settings=settings)
    media = {"image": args.image_file, "video": args.video_file}
    if args.audio_file:
        media["audio"] = load_audio(args.audio_file, sample_rate=16000, channel=0)[0]

    # With an audio file and no typed first turn, the audio is the question (as the official CLI does).
    messages = iter(args.message) if args.message else None
    if messages is None and sys.stdin.isatty():
        print(BANNER, file=sys.stderr)
    first = "" if args.audio_file and messages is None else None
    while True:
        text = first if first is not None else (next(messages, None) if messages is not None else read_turn())
        first = None
        if text is None or (not text.strip() and all(v is None for v in media.values())):  # audio: a tensor
            return 0
        bar = JobBar("replying")
        progress = TextProgress(bar, 64, args.max_new_tokens, spoken=speech is not None, sample_rate=sample_rate)
        start = time.perf_counter()
        audio: AudioFile | None = None
        interrupted = False
        events = chat.ask(text, keep_audio=False, **{k: v for k, v in media.items() if v is not None})
        try:
            bar.text("assistant: ")
            for event in events:
                if isinstance(event, TextEvent):
                    bar.text(event.text)
                elif isinstance(event, AudioEvent):
                    if audio is None:
                        audio = AudioFile(args.out, sample_rate)
                    audio.write(event.samples)
                    progress.on_audio(event.samples)
                progress.on_tokens(len(chat.last.text_ids))
                if chat.last.text_finish is not None and not progress.finished:
                    progress.on_text_end()
            progress.finish()
            bar.end_text()
        except KeyboardInterrupt:  # Ctrl-C: stop the reply, keep what was spoken
            interrupted = True
        finally:
            events.close()
            if audio is not None:
                audio.close()
            bar.close()
        media = {}  # media belong to the first turn; the history keeps them
        seconds = audio.seconds if audio is not None else 0.0
        if interrupted:
            kept = f"the {seconds:.2f} s of audio spoken so far are in {args.out}" if audio is not None else "no audio"
            print(f"interrupted: the reply stopped; {kept}", file=sys.stderr)
            return 130
        reply = chat.last
        spoken = f", {seconds:.2f} s of audio -> {args.out}" if audio is not None else ""
        first_audio = f", first audio {reply.first_audio_seconds:.2f} s" if reply.first_audio_seconds else ""
        status = " (tts_error: see below)" if reply.tts_error else ""
        print(f"[{len(reply.text_ids)} tokens in {time.perf_counter() - start:.2f} s{first_audio}{spoken}{status}]",
              file=sys.stderr)
        if reply.speech is not None:
            rows = reply.speech.rows
            at = [len(speech.vocoder_tokens(rows[: a.row + 1])) / token_rate for a in reply.speech.aborts]
            for line in explain(reply.speech.aborts, reply.speech.finish_reason, len(reply.speech.unspoken),
                                seconds, str(args.out), at, tiny=tiny_speech):
                print(line, file=sys.stderr)
