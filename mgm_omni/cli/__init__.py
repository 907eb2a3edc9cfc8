"""``mgm-omni`` command line: thin sub-commands that translate arguments and call the pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from mgm_omni import __version__
from mgm_omni.cli.common import DEFAULT_MLLM, DEFAULT_SPEECHLM, MOUTH_DEFAULT_HELP, CLIError
from mgm_omni.cli.device import check_device

def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="model dtype (default: bfloat16 on cpu for the LM, float32 for the vocoder)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def _add_voice(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref-audio", default=None, help="reference clip (3-30 s) whose voice to clone")
    p.add_argument("--ref-text", default=None, help="transcript of the reference clip")
    p.add_argument("--voice", default=None, help="name of a registered voice (see `mgm-omni voices`)")
    p.add_argument("--voices-dir", default=None, help="voice registry folder (default: $MGM_OMNI_CACHE/voices)")
    p.add_argument("--cosyvoice-path", default=None, help="directory with cosyvoice2.yaml, flow.pt, hift.pt")


def _add_serving(p: argparse.ArgumentParser) -> None:
    """Models, voices and limits shared by `serve` and `demo`."""
    p.add_argument("--model", default=None, help=f"SpeechLM directory, name or hub id ({MOUTH_DEFAULT_HELP})")
    p.add_argument("--mllm", default=None, help="MLLM directory or hub id")
    p.add_argument("--voices-dir", default=None, help="voice registry folder (default: $MGM_OMNI_CACHE/voices)")
    p.add_argument("--temperature", type=float, default=0.3, help="speech sampling temperature (0 = greedy)")
    p.add_argument("--max-rows", type=int, default=8192, help="SpeechLM rows per request (160 ms each)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 queue_full")
    p.add_argument("--max-input-chars", type=int, default=4096, help="longest text per speech request")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request body / upload")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgm-omni",
        description="MGM-Omni: understand text, images, video and long audio; speak long-form, "
                    "streamed, voice-cloned speech.",
    )
    parser.add_argument("--version", action="version", version=f"mgm-omni {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tts", help="speak text (voice cloning from a reference clip)",
                       description="Turn text into speech with the SpeechLM, flow matching and a vocoder.")
    p.add_argument("text", nargs="?", help="text to speak (use --text-file for long text; '-' reads stdin)")
    p.add_argument("--text-file", default=None, help="read the text from this file")
    p.add_argument("--model", default=None, help=f"SpeechLM directory, name or hub id ({MOUTH_DEFAULT_HELP})")
    p.add_argument("--out", default="outputs/tts.wav",
                   help="audio file (.wav, .flac, .ogg, .mp3) written as the speech is made; only a WAV is sure to "
                        "be valid if the run is killed (default: outputs/tts.wav)")
    p.add_argument("--temperature", type=float, default=0.3, help="speech sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-rows", type=int, default=8192, help="maximum SpeechLM rows (160 ms each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8 SpeechLM weights for the decode steps: about 1.7x faster than bf16 on CPU (native step), "
                        "slightly different output")
    _add_voice(p)
    _add_common(p)

    p = sub.add_parser("transcribe", help="transcribe or describe audio with the MLLM",
                       description="Audio (any length) to text with the dual audio encoder and the MLLM.")
    p.add_argument("audio", help="audio or video file")
    p.add_argument("--model", default=DEFAULT_MLLM, help="MLLM directory or hub id")
    p.add_argument("--prompt", default="Please transcribe the audio.", help="instruction for the MLLM")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="cap on generated text tokens (default: 8 per second of audio + 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="text sampling temperature (0 = greedy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trim-padding", action="store_true",
                   help="drop the audio tokens that lie wholly in the last 30 s window's zero padding")
    _add_common(p)

    p = sub.add_parser("chat", help="multi-turn omni chat (text/image/video/audio in; text and speech out)",
                       description="Chat with the MLLM; replies are spoken by the SpeechLM.")
    p.add_argument("--model", default=DEFAULT_MLLM, help="MLLM directory or hub id")
    p.add_argument("--speechlm", default=DEFAULT_SPEECHLM,
                   help=f"SpeechLM directory, name or hub id ({MOUTH_DEFAULT_HELP})")
    p.add_argument("--image-file", default=None)
    p.add_argument("--video-file", default=None)
    p.add_argument("--audio-file", default=None)
    p.add_argument("--out", default="outputs/chat.wav",
                   help="audio file (.wav, .flac, .ogg, .mp3) of the last spoken reply, written as it is spoken; "
                        "only a WAV is sure to be valid if the run is killed (default: outputs/chat.wav)")
    p.add_argument("--no-speech", action="store_true", help="text replies only")
    p.add_argument("-m", "--message", action="append", default=None,
                   help="a user turn (repeat for several); without it turns are read from stdin until an empty line")
    p.add_argument("--temperature", type=float, default=0.3, help="text sampling temperature (0 = greedy)")
    p.add_argument("--speech-temperature", type=float, default=0.3, help="speech sampling temperature")
    p.add_argument("--max-new-tokens", type=int, default=4096, help="maximum text tokens per reply")
    p.add_argument("--max-rows", type=int, default=4096, help="maximum SpeechLM rows (160 ms each) per reply")
    p.add_argument("--seed", type=int, default=0)
    _add_voice(p)
    _add_common(p)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP API (speech, transcriptions, chat, voices)",
                       description="Serve the models over HTTP. Binds to 127.0.0.1 unless --host is given.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this bearer token (default: $MGM_OMNI_API_KEY if set)")
    _add_serving(p)

    p = sub.add_parser("demo", help="web demo (Gradio) on localhost",
                       description="Browser demo. Binds to 127.0.0.1; no public link unless --share.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--share", action="store_true", help="create a public Gradio link (off by default)")
    _add_serving(p)

    p = sub.add_parser("eval", help="score generated speech or transcripts on benchmarks",
                       description="Long-TTS-Eval, seed-tts-eval and ASR sets: WER/CER, speaker similarity, RTF.")
    from mgm_omni.eval.options import add_eval_arguments  # light module: argparse only

    add_eval_arguments(p)
    _add_common(p)

    p = sub.add_parser("train", help="run a training recipe",
                       description="Train a stage of the SpeechLM or MLLM from a recipe config.")
    from mgm_omni.cli.train import add_train_arguments  # light module: argparse only

    add_train_arguments(p)
    _add_common(p)

    from mgm_omni.data.cli import add_data_parser  # light module: argparse only

    _add_common(add_data_parser(sub))

    p = sub.add_parser("voices", help="list, add or remove registered reference voices",
                       description="Manage the voice registry shared by the CLI and the server.")
    p.add_argument("action", choices=["list", "add", "remove"], nargs="?", default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--model", default=None, help="SpeechLM whose front-end computes the voice (default as `tts`)")
    p.add_argument("--voices-dir", default=None, help="voice registry folder (default: $MGM_OMNI_CACHE/voices)")
    p.add_argument("--audio", default=None, help="reference clip for `add`")
    p.add_argument("--text", default=None, help="its transcript for `add` (default: transcribed by Whisper base)")
    _add_common(p)
    return parser


# sub-command -> "module:function" (imported only when that command runs)
HANDLERS = {"tts": "tts:run", "transcribe": "transcribe:run", "chat": "chat:run", "serve": "serving:run_serve",
            "demo": "serving:run_demo", "eval": "eval_command:run", "train": "train:run", "data": "data:run",
            "voices": "voices:run"}


def _handler(command: str) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, _, function = HANDLERS[command].partition(":")
    return getattr(importlib.import_module(f"mgm_omni.cli.{module}"), function)


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch starts its OpenMP threads: spinning waiters slow shared CPUs several-fold.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # oneDNN caches a primitive per matmul / conv shape (1024 by default); long runs meet many shapes (flow and
    # vocoder calls of varying length; before the decode attention ran in float32, one per generated token: 600
    # brain tokens peaked at 2.35 GB, 1.92 GB with 64, same speed; 4 slowed the decode by 30 %). Read lazily by
    # oneDNN, so setting it here is in time.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        check_device(args.device)  # before any model is loaded
        return _handler(args.command)(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, RuntimeError, OSError) as exc:
        if args.verbose:
            raise
        print(f"mgm-omni {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
