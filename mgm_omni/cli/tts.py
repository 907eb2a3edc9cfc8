"""``mgm-omni tts``: text in, an audio file out, with one progress bar over decoding and rendering.

The file is opened before decoding starts and every chunk is written the moment it is rendered, so memory
does not grow with the length of the text and an interrupted run leaves the audio made so far: a WAV is
valid at every moment, even if the process is killed; on Ctrl-C decoding stops and the file (any format)
is closed complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mgm_omni.cli.common import TINY_MODEL, CLIError
from mgm_omni.cli.output import AudioFile, check_output

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


def auto_transcriber(ref_audio: str | None, ref_text: str | None):
    """Whisper base for a ``--ref-audio`` given without ``--ref-text`` (it says what it heard), else ``None``."""
    if not ref_audio or (ref_text and ref_text.strip()):
        return None
    if not Path(ref_audio).is_file():
        raise CLIError(f"reference audio not found: {ref_audio}")
    from mgm_omni.generation.wave.ref_transcript import reference_transcriber

    whisper = reference_transcriber()

    def transcribe(wave16k) -> str:
        heard = whisper(wave16k)
        print(f"no --ref-text: the reference clip was transcribed by Whisper base as: {heard!r}", file=sys.stderr)
        return heard

    return transcribe


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    text = read_text(args)  # the input and the output path are checked before anything heavy loads
    out = check_output(args.out)
    if args.voice and args.ref_audio:
        raise CLIError("pass either --voice or --ref-audio, not both")
    from mgm_omni.cli.progress import JobBar, SpeechProgress
    from mgm_omni.cli.speech_report import explain, what_it_does
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
        quantize=args.quantize, transcriber=auto_transcriber(args.ref_audio, args.ref_text),
    )
    print(what_it_does(mouth, pipe.voice, text, out, time.perf_counter() - started), flush=True)
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

    interrupted = False
    audio = AudioFile(out, pipe.sample_rate)  # before decoding: the file grows as the audio is made
    chunks = pipe.stream(text, on_row=on_row)
    try:
        for chunk in chunks:
            audio.write(chunk)
            progress.on_audio(chunk)
        progress.finish()
    except KeyboardInterrupt:  # Ctrl-C: stop decoding, keep what was made
        interrupted = True
    finally:
        chunks.close()  # stops decoding (a no-op once the stream has ended)
        audio.close()
        bar.close()
    result = pipe.last
    result.path = out
    if interrupted:
        print(f"interrupted: decoding stopped; the {audio.seconds:.2f} s of audio made so far are in {out}",
              file=sys.stderr)
    print(result.summary())  # the last line on stdout (what was made, with timing); an echo check goes after it
    for line in explain(aborts, result.finish_reason, ended["unspoken"], audio.seconds, str(out),
                        at_seconds, tiny=mouth.builtin):
        print(line, file=sys.stderr)
    return 130 if interrupted else 0
