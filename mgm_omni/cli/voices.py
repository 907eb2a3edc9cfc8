"""``mgm-omni voices``: list, add or remove registered reference voices (shared with the server)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mgm_omni.cli.common import CLIError

TOKEN_RATE = 25.0  # S3 tokens per second of reference audio


def registry(model: str | None, voices_dir: str | None):
    """The voice registry of ``model`` (default: as ``tts``) in ``voices_dir`` (default: the cache)."""
    from mgm_omni.hub import voices_root
    from mgm_omni.serving.services import voice_registry

    folder = Path(voices_dir) if voices_dir else voices_root()
    return voice_registry(model, folder)


def seconds(voice) -> float:
    """The voice's reference duration: its clip's, else (a synthetic prompt) that of its prompt tokens."""
    return voice.seconds if voice.seconds else voice.n_tokens / TOKEN_RATE


def transcript_of(clip: str) -> str:
    """The clip's transcript by Whisper base (the SpeechLM reads it before the clip's units), said aloud."""
    from mgm_omni.audio import load_audio
    from mgm_omni.generation.wave.ref_transcript import reference_transcriber, transcribe_reference

    text = transcribe_reference(load_audio(clip, sample_rate=16000)[0], reference_transcriber())
    print(f"no --text: the clip was transcribed by Whisper base as: {text!r}")
    return text


def run(args: argparse.Namespace) -> int:
    from mgm_omni.serving.voice_names import OPENAI_VOICES, check_new_name, resolve
    from mgm_omni.engine.voices import VoiceError

    reg = registry(args.model, args.voices_dir)
    try:
        if args.action == "list":
            print(f"{'name':20s} {'kind':6s} {'length':>8s}  transcript")
            for voice in reg.list():
                kind = "preset" if voice.preset else "stored"
                print(f"{voice.name:20s} {kind:6s} {seconds(voice):6.2f} s  {voice.text[:60]}")
            by_target: dict[str, list[str]] = {}
            for alias, target in OPENAI_VOICES.items():
                by_target.setdefault(target, []).append(alias)
            print("OpenAI voice names: " + "; ".join(f"{', '.join(a)} -> {t}" for t, a in by_target.items()))
        elif args.action == "add":
            if not args.name or not args.audio:
                raise CLIError("usage: mgm-omni voices add NAME --audio CLIP [--text TRANSCRIPT]")
            try:
                data = Path(args.audio).read_bytes()
            except OSError as exc:
                raise CLIError(f"cannot read --audio {args.audio}: {exc.strerror or exc}") from None
            check_new_name(reg, args.name)
            voice = reg.add(args.name, data, args.text or transcript_of(args.audio))
            print(f"added {voice.name!r}: {seconds(voice):.2f} s, {voice.n_tokens} reference tokens")
        else:
            if not args.name:
                raise CLIError("usage: mgm-omni voices remove NAME")
            name = resolve(reg, args.name, aliases=False)
            reg.remove(name)
            print(f"removed {name!r}")
    except VoiceError as exc:
        raise CLIError(str(exc)) from None
    return 0
