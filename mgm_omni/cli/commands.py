"""Handlers of the ``mgm-omni`` sub-commands: read inputs, call the pipeline, write outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgm_omni.cli.common import TINY_MODEL, CLIError

MAX_TEXT_CHARS = 1_000_000


def _read_text(args: argparse.Namespace) -> str:
    if args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read --text-file {args.text_file}: {exc}") from exc
    elif args.text == "-":
        text = sys.stdin.read()
    elif args.text is not None:
        text = args.text
    else:
        raise CLIError("no text given: pass TEXT, '-' for stdin, or --text-file")
    if not text.strip():
        raise CLIError("the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise CLIError(f"the text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return text


def run_tts(args: argparse.Namespace) -> int:
    text = _read_text(args)  # validate input before loading anything heavy
    from mgm_omni.generation import pipeline

    from mgm_omni.hub import resolve_mouth

    mouth = resolve_mouth(args.model)
    model = mouth.name
    if mouth.builtin:
        print(
            "NOTE: no trained default model is available on this machine, so this runs the whole pipeline on a "
            f"tiny RANDOM model ('{TINY_MODEL}'): the output is noise-like audio, not speech. Pass --model with "
            "an MGM-Omni-TTS checkpoint directory for real speech.",
            file=sys.stderr,
        )
    reference = None
    if args.voice:
        if args.ref_audio:
            raise CLIError("pass either --voice or --ref-audio, not both")
        from mgm_omni.serving.voices import VoiceError

        try:
            voice = _registry(model, args.voices_dir).get(args.voice)
        except VoiceError as exc:
            raise CLIError(str(exc)) from None
        reference = (voice.prompt, voice.text)
    result = pipeline.synthesize_to_file(
        text, args.out, mouth.path, ref_audio=args.ref_audio, ref_text=args.ref_text, reference=reference,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, max_rows=args.max_rows,
        seed=args.seed, device=args.device, dtype=args.dtype, cosyvoice_path=args.cosyvoice_path,
        quantize=args.quantize,
    )
    print(result.summary())
    return 0


def _not_yet(what: str) -> int:
    raise CLIError(f"{what} is not available in this version of mgm-omni yet")


def run_transcribe(args: argparse.Namespace) -> int:
    """Audio (or a video's audio track), any length -> the MLLM's text, streamed to stdout."""
    if not Path(args.audio).is_file():
        raise CLIError(f"audio file not found: {args.audio}")
    if args.max_new_tokens < 1:
        raise CLIError("--max-new-tokens must be >= 1")
    import time

    import torch

    from mgm_omni.audio import load_audio
    from mgm_omni.cli.common import DEFAULT_MLLM
    from dataclasses import replace

    from mgm_omni.generation.mllm.runner import MLLM
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location
    from mgm_omni.text import mllm_user_content

    model = default_mllm() if args.model == DEFAULT_MLLM else args.model
    if model == TINY_MODEL:
        print(f"NOTE: no trained MLLM is available on this machine, so this runs on a tiny RANDOM model "
              f"('{TINY_MODEL}'): the text is gibberish. Pass --model with an MGM-Omni checkpoint.", file=sys.stderr)
    wave, _ = load_audio(args.audio, sample_rate=16000, channel=0)  # channel 0, as the official loader
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if model == TINY_MODEL else torch.bfloat16)
    mllm = MLLM.from_pretrained(mllm_location(model), dtype=dtype, device=args.device, towers=("audio",),
                                temperature=args.temperature)
    mllm.config = replace(mllm.config, max_new_tokens=args.max_new_tokens, seed=args.seed)
    start = time.perf_counter()
    audio = mllm.encode_audio(wave, trim_padding=args.trim_padding)
    prompt = mllm.prompt([("user", mllm_user_content(args.prompt, speech=True))], [audio])
    n, finish = 0, None
    for step in mllm.stream(prompt):
        print(step.text, end="", flush=True)
        n, finish = n + (step.finish_reason != "eos"), step.finish_reason
    print()
    seconds = time.perf_counter() - start
    print(f"{wave.shape[0] / 16000:.1f} s of audio -> {audio.embeddings.shape[0]} audio tokens -> {n} text tokens "
          f"in {seconds:.2f} s ({finish})", file=sys.stderr)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """Multi-turn chat; media attach to the first turn; each reply is streamed as text and written as a WAV."""
    for flag in ("image_file", "video_file", "audio_file"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise CLIError(f"--{flag.replace('_', '-')}: file not found: {path}")
    if args.image_file and args.video_file:
        raise CLIError("give --image-file or --video-file, not both")
    if args.max_new_tokens < 1 or args.max_rows < 1:
        raise CLIError("--max-new-tokens and --max-rows must be >= 1")
    import time
    from dataclasses import replace

    import soundfile as sf
    import torch

    from mgm_omni.audio import load_audio
    from mgm_omni.cli.common import DEFAULT_MLLM, DEFAULT_SPEECHLM
    from mgm_omni.generation.speech.chunked_decode import DecodeConfig
    from mgm_omni.generation.mllm.runner import MLLM, SHARED_TEXT_IDS
    from mgm_omni.generation.omni import OmniChat, OmniSettings, TextEvent
    from mgm_omni.generation.sampling import SamplingConfig
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location

    model = default_mllm() if args.model == DEFAULT_MLLM else args.model
    if model == TINY_MODEL:
        print(f"NOTE: no trained MLLM is available on this machine, so this runs on a tiny RANDOM model "
              f"('{TINY_MODEL}'): replies are gibberish. Pass --model with an MGM-Omni checkpoint.", file=sys.stderr)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float32 if model == TINY_MODEL else torch.bfloat16)
    towers = [t for t, on in (("audio", args.audio_file or args.video_file), ("vision", args.image_file or
                                                                              args.video_file)) if on]
    mllm = MLLM.from_pretrained(mllm_location(model), dtype=dtype, device=args.device, towers=towers,
                                temperature=args.temperature)  # top-k/top-p/penalty: generation_config.json
    text_cfg = replace(mllm.config, max_new_tokens=args.max_new_tokens, mask_from=SHARED_TEXT_IDS, seed=args.seed)
    speech = token2wav = reference = None
    reference_text = ""
    if not args.no_speech:
        from mgm_omni.generation import pipeline

        from mgm_omni.hub import resolve_mouth

        mouth = resolve_mouth(None if args.speechlm == DEFAULT_SPEECHLM else args.speechlm)
        if mouth.builtin:
            print(f"NOTE: the SpeechLM is the tiny RANDOM '{TINY_MODEL}' model: replies are spoken as noise-like "
                  "audio. Pass --speechlm with an MGM-Omni-TTS checkpoint.", file=sys.stderr)
        tts = pipeline.TTSPipeline.load(mouth.path, ref_audio=args.ref_audio, ref_text=args.ref_text,
                                        cosyvoice_path=args.cosyvoice_path, dtype=args.dtype, device=args.device,
                                        temperature=args.speech_temperature, max_rows=args.max_rows, seed=args.seed)
        speech, token2wav = tts.generator, tts.token2wav
        reference, reference_text = tts.reference, tts.reference_text
    settings = OmniSettings(text=text_cfg, speech=DecodeConfig(
        SamplingConfig(temperature=args.speech_temperature), max_new_rows=args.max_rows, seed=args.seed))
    chat = OmniChat(mllm, speech, token2wav, reference, reference_text, settings)
    media = {"image": args.image_file, "video": args.video_file}
    if args.audio_file:
        media["audio"] = load_audio(args.audio_file, sample_rate=16000, channel=0)[0]
    def read_turn() -> str | None:
        if sys.stdin.isatty():
            print("user: ", end="", flush=True)
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None

    # With an audio file and no typed first turn, the audio is the question (as the official CLI does).
    messages = iter(args.message) if args.message else None
    first = "" if args.audio_file and messages is None else None
    while True:
        text = first if first is not None else (next(messages, None) if messages is not None else read_turn())
        first = None
        if text is None or (not text.strip() and not any(media.values())):
            return 0
        print("assistant: ", end="", flush=True)
        start = time.perf_counter()
        for event in chat.ask(text, **{k: v for k, v in media.items() if v is not None}):
            if isinstance(event, TextEvent):
                print(event.text, end="", flush=True)
        print()
        media = {}  # media belong to the first turn; the history keeps them
        reply = chat.last
        if reply.audio.size:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(out), reply.audio, 24000, subtype="PCM_16")
        spoken = f", {reply.audio.shape[0] / 24000:.2f} s of audio -> {args.out}" if reply.audio.size else ""
        first_audio = f", first audio {reply.first_audio_seconds:.2f} s" if reply.first_audio_seconds else ""
        status = " (tts_error)" if reply.tts_error else ""
        print(f"[{len(reply.text_ids)} tokens in {time.perf_counter() - start:.2f} s{first_audio}{spoken}{status}]",
              file=sys.stderr)


def run_serve(args: argparse.Namespace) -> int:
    from mgm_omni.serving.server import serve, services_from_args

    services = services_from_args(args, args.api_key)
    serve(services, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from mgm_omni.serving.server import services_from_args
    from mgm_omni.serving.web_demo import launch

    services = services_from_args(args)
    try:
        launch(services, host=args.host, port=args.port, share=args.share)
    finally:
        services.close()
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from mgm_omni.eval.runner import run_from_args

    return run_from_args(args)


def run_train(args: argparse.Namespace) -> int:
    return _not_yet("`train` (training recipes)")


def _registry(model: str | None, voices_dir: str | None):
    from mgm_omni.hub.tiny_mouth import cache_root
    from mgm_omni.serving.services import voice_registry

    return voice_registry(model, Path(voices_dir) if voices_dir else cache_root() / "voices")


def run_voices(args: argparse.Namespace) -> int:
    from mgm_omni.serving.voices import VoiceError

    registry = _registry(args.model, args.voices_dir)
    try:
        if args.action == "list":
            for voice in registry.list():
                info = voice.info()
                kind = "preset" if info.get("preset") else "stored"
                print(f"{voice.name:20s} {kind:6s} {info.get('seconds') or 0:6.2f} s  {voice.text[:60]}")
        elif args.action == "add":
            if not args.name or not args.audio:
                raise CLIError("usage: mgm-omni voices add NAME --audio CLIP [--text TRANSCRIPT]")
            data = Path(args.audio).read_bytes()
            voice = registry.add(args.name, data, args.text)
            print(f"added {voice.name!r}: {voice.seconds} s, {voice.prompt.n_tokens} reference tokens")
        else:
            if not args.name:
                raise CLIError("usage: mgm-omni voices remove NAME")
            registry.remove(args.name)
            print(f"removed {args.name!r}")
    except VoiceError as exc:
        raise CLIError(str(exc)) from None
    return 0
