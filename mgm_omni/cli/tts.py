"""``mgm-omni tts``: text in, an audio file out, with one progress bar over decoding and rendering."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgm_omni.cli.common import TINY_MODEL, CLIError
from mgm_omni.cli.output import check_output, write_audio

MAX_TEXT_CHARS = 1_000_000


def read_text(args: argparse.Namespace) -> str:
    """The text to speak from TEXT, '-' (stdin) or --text-file, checked."""
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


def registered_voice(model: str | None, voices_dir: str | None, name: str):
    """The registered voice ``name`` of ``model`` (names ignore case; OpenAI names map to presets)."""
    from mgm_omni.cli.voices import registry
    from mgm_omni.serving.voice_names import resolve
    from mgm_omni.engine.voices import VoiceError

    reg = registry(model, voices_dir)
    try:
        return reg.get(resolve(reg, name))
    except VoiceError as exc:
        raise CLIError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    text = read_text(args)  # the input and the output path are checked before anything heavy loads
    out = check_output(args.out)
    if args.voice and args.ref_audio:
        raise CLIError("pass either --voice or --ref-audio, not both")
    from mgm_omni.cli.progress import JobBar, SpeechProgress
    from mgm_omni.cli.speech_report import explain
    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.generation.speech.generator import SpeechRequest
    from mgm_omni.hub import resolve_mouth

    mouth = resolve_mouth(args.model)
    if mouth.builtin:
        print(
            "NOTE: no trained default model is available on this machine, so this runs the whole pipeline on a "
            f"tiny RANDOM model ('{TINY_MODEL}'): the output is noise-like audio, not speech. Pass --model with "
            "an MGM-Omni-TTS checkpoint directory for real speech.",
            file=sys.stderr,
        )
    voice = registered_voice(mouth.name, args.voices_dir, args.voice) if args.voice else None
    pipe = TTSPipeline.load(
        mouth.path, voice=voice, ref_audio=args.ref_audio, ref_text=args.ref_text,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, max_rows=args.max_rows,
        seed=args.seed, device=args.device, dtype=args.dtype, cosyvoice_path=args.cosyvoice_path,
        quantize=args.quantize,
    )
    request = SpeechRequest(text, pipe.voice.text, pipe.voice.reference_tokens)
    bar = JobBar("speaking")
    progress = SpeechProgress(bar, len(pipe.generator.prompt(request).buffer), pipe.sample_rate,
                              pipe.mouth.token_rate)
    aborts, at_seconds, ended = [], [], {"unspoken": 0}

    def on_row(item) -> None:
        progress.on_row(item)
        if item.event.abort is not None:
            aborts.append(item.event.abort)
            at_seconds.append(progress.tokens / pipe.mouth.token_rate)
        if item.event.finish_reason is not None:
            ended["unspoken"] = len(item.event.unspoken or ())

    try:
        for chunk in pipe.stream(text, on_row=on_row):
            progress.on_audio(chunk)
        progress.finish()
    finally:
        bar.close()
    result = pipe.last
    result.path = write_audio(out, result.audio, result.sample_rate)
    print(result.summary())
    for line in explain(aborts, result.finish_reason, ended["unspoken"], result.audio_seconds, str(out),
                        at_seconds, tiny=mouth.builtin):
        print(line, file=sys.stderr)
    return 0
