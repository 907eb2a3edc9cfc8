"""Spoken questions: does the default brain answer a question it hears as its LLM answers the same question typed?

Thirty short English factual questions (written here, each with its answer keys) are spoken by the dev voice
flite ``rms`` (never trained on) through the corpus's own engine and signal chain (``mgm_omni.data``: engine,
resample, trim, level). Each is asked twice of the same brain, greedy, one turn, the same system prompt and
text settings as ``mgm-omni chat``:

* spoken: the audio alone is the turn, as ``mgm-omni chat --audio-file q.wav --no-speech`` asks it;
* typed: the question's text is the turn (the LLM's own answer: the self-distillation target of stage 2).

The first ``--cli`` questions also go through the real CLI command, whose reply must equal the in-process one
(the two paths agree, so the in-process numbers are the command's).

Matching rule (fixed before any run). Replies are normalised (lower case, punctuation dropped, number words
0-100 as digits). A reply's *keys* are the question's answer keys it contains (whole words; "paris",
"7"/"seven", "carbon dioxide"/"co2", ...). A spoken reply **agrees** with the typed one when

1. the typed reply has keys and the spoken reply shares at least one of them (key-entity match), or
2. the typed reply has no key (the LLM's typed answer is off), and the spoken reply has none either and shares
   at least half of the typed reply's content words (words not in the question and not stop words; F1 >= 0.5).

Both replies' correctness (any key present) is reported beside agreement. A diagnostic column, not the
brain's own answer: the brain's transcript of the question (``Transcriber``, its WER against the question) and
the LLM's answer to that transcript typed (``cascade``), i.e. what a transcribe-then-answer fallback would give.

    .venv/bin/python recipes/brain_questions_eval.py [--out outputs/brain_questions] [--cli 3] [--threads 1]
        [--instruction "Answer the question in the audio."]   # typed text beside the audio (a variant)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("7",)),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("At what temperature in degrees Celsius does water boil?", ("100",)),
    ("How many legs does a spider have?", ("8",)),
    ("What is the chemical symbol for gold?", ("au",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("Which planet is known as the red planet?", ("mars",)),
    ("How many continents are there on Earth?", ("7",)),
    ("What gas do plants take in from the air?", ("carbon dioxide", "co2")),
    ("What is the capital of Italy?", ("rome",)),
    ("Who painted the Mona Lisa?", ("leonardo", "da vinci")),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("How many hours are there in a day?", ("24",)),
    ("What language do people speak in Brazil?", ("portuguese",)),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("How many minutes are there in an hour?", ("60",)),
    ("Which animal is called the king of the jungle?", ("lion",)),
    ("What is the star at the center of our solar system?", ("sun",)),
    ("What fruit is guacamole made from?", ("avocado",)),
    ("In which country are the pyramids of Giza?", ("egypt",)),
    ("What is the currency of the United Kingdom?", ("pound", "pounds", "sterling")),
    ("How many sides does a triangle have?", ("3",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("Which metal is liquid at room temperature?", ("mercury",)),
    ("What is the opposite of hot?", ("cold",)),
    ("How many months are there in a year?", ("12",)),
]

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
STOP = set("a an the is are was were be of in on at to for and or it its this that what which who how many much "
           "there do does did i you we they he she his her their our your my with by from as about".split())


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, number words 0-100 to digits ("twenty four" -> "24")."""
    words = re.sub(r"[^a-z0-9\s]", " ", text.lower().replace("-", " ")).split()
    out: list[str] = []
    for w in words:
        if w in _UNITS:
            value = _UNITS.index(w)
            if out and out[-1].isdigit() and int(out[-1]) in _TENS.values() and value < 10:
                out[-1] = str(int(out[-1]) + value)  # "twenty four"
                continue
            out.append(str(value))
        elif w in _TENS:
            out.append(str(_TENS[w]))
        elif w == "hundred" and out and out[-1] == "1":
            out[-1] = "100"
        elif w == "hundred":
            out.append("100")
        else:
            out.append(w)
    return " ".join(out)


def keys_in(reply: str, keys: tuple[str, ...]) -> set[str]:
    """The answer keys the normalised reply contains as whole words."""
    text = f" {normalise(reply)} "
    return {k for k in keys if f" {normalise(k)} " in text}


def content_f1(a: str, b: str, question: str) -> float:
    """F1 of the two replies' content words (not in the question, not stop words)."""
    skip = STOP | set(normalise(question).split())
    wa = [w for w in normalise(a).split() if w not in skip]
    wb = [w for w in normalise(b).split() if w not in skip]
    common = sum(min(wa.count(w), wb.count(w)) for w in set(wa))
    if not wa or not wb or not common:
        return 0.0
    p, r = common / len(wb), common / len(wa)
    return 2 * p * r / (p + r)


def agreement(typed: str, spoken: str, question: str, keys: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the spoken reply agrees with the typed one, and which rule decided (see the module doc)."""
    kt, ks = keys_in(typed, keys), keys_in(spoken, keys)
    if kt:
        return bool(kt & ks), "key"
    return (not ks and content_f1(typed, spoken, question) >= 0.5), "content-f1"


def render_questions(out: Path) -> list[Path]:
    """Each question spoken by flite rms, as the corpus renders it (16 kHz here), written once to ``out``."""
    from mgm_omni.data.engines import EngineSet
    from mgm_omni.data.postprocess import SignalConfig, level, to_corpus
    from mgm_omni.data.speakers import speaker_from_dict

    speaker = speaker_from_dict({"voice": "flite:rms"})
    voice = speaker.parsed["en"][0]
    signal = SignalConfig(sample_rate=16000)
    engines = EngineSet()
    paths = []
    try:
        for i, (question, _) in enumerate(QUESTIONS):
            path = out / f"q{i + 1:02d}.wav"
            if not path.is_file():
                raw, sr = engines.synthesize(voice, question, "en", speaker)
                sf.write(path, level(to_corpus(raw, sr, signal, vtl=speaker.vtl), 16000, signal), 16000)
            paths.append(path)
    finally:
        engines.close()
    return paths


def chat_settings(mllm, max_new_tokens: int):
    """The text settings of `mgm-omni chat` (greedy, shared-id mask, seed 0) with a reply budget."""
    from mgm_omni.generation.mllm.runner import SHARED_TEXT_IDS

    return replace(mllm.config, max_new_tokens=max_new_tokens, mask_from=SHARED_TEXT_IDS, seed=0)


def one_turn_reply(mllm, settings, text: str = "", audio=None) -> str:
    """The reply to one fresh user turn (text, audio or both), as one `mgm-omni chat --no-speech` call gives."""
    from mgm_omni.generation.omni import OmniChat, OmniSettings, TextEvent

    chat = OmniChat(mllm, settings=OmniSettings(text=settings))
    return "".join(e.text for e in chat.ask(text, audio=audio, speak=False) if isinstance(e, TextEvent)).strip()


def cli_reply(wav: Path, threads: int, max_new_tokens: int, instruction: str = "") -> str:
    """The reply of ``mgm-omni chat --audio-file wav --no-speech`` (greedy; ``-m instruction`` if given)."""
    cmd = [str(ROOT / ".venv" / "bin" / "mgm-omni"), "chat", "--audio-file", str(wav), "--no-speech",
           "--temperature", "0", "--max-new-tokens", str(max_new_tokens), "--threads", str(threads)]
    cmd += ["-m", instruction] if instruction else []
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    text = proc.stdout
    return text.split("assistant: ", 1)[1].strip() if "assistant: " in text else text.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "brain_questions")
    ap.add_argument("--cli", type=int, default=3, help="questions also asked through `mgm-omni chat`")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("-n", type=int, default=len(QUESTIONS))
    ap.add_argument("--instruction", default="",
                    help="typed text beside the audio (default none: the audio alone is the turn)")
    ap.add_argument("--assets", type=Path, default=None,
                    help="projector assets (projector.safetensors + brain.json) to assemble the default brain with")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _machine import describe_cpu

    from mgm_omni.audio import load_audio
    from mgm_omni.eval.metrics import score_transcript
    from mgm_omni.generation.mllm.runner import MLLM
    from mgm_omni.generation.mllm.transcriber import Transcriber
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location

    args.out.mkdir(parents=True, exist_ok=True)
    wavs = render_questions(args.out)[: args.n]
    name = default_mllm()
    if args.assets is not None:
        from mgm_omni.hub.default_brain import default_brain_dir

        name, location = f"default brain with {args.assets}", default_brain_dir(assets=args.assets)
    else:
        location = mllm_location(name)
    mllm = MLLM.from_pretrained(location, dtype=torch.bfloat16, towers=("audio",), temperature=0.0)
    text_cfg = chat_settings(mllm, args.max_new_tokens)

    def ask(text: str = "", audio=None) -> tuple[str, float]:
        t0 = time.perf_counter()
        return one_turn_reply(mllm, text_cfg, text, audio), time.perf_counter() - t0

    rows = []
    print(f"CPU: {describe_cpu()}; {args.threads} thread(s); brain {name}")
    for i, ((question, keys), wav) in enumerate(zip(QUESTIONS, wavs)):
        wave, _ = load_audio(wav, sample_rate=16000, channel=0)
        spoken, s_sec = ask(args.instruction, audio=wave)
        typed, t_sec = ask(question)
        ok, rule = agreement(typed, spoken, question, keys)
        heard = Transcriber(mllm).transcribe(wave, "en")
        cascade, _ = ask(heard)
        row = {"question": question, "keys": keys, "typed": typed, "spoken": spoken, "agree": ok, "rule": rule,
               "typed_correct": bool(keys_in(typed, keys)), "spoken_correct": bool(keys_in(spoken, keys)),
               "audio_s": round(wave.shape[-1] / 16000, 2), "spoken_s": round(s_sec, 2), "typed_s": round(t_sec, 2),
               "transcript": heard, "transcript_wer": round(score_transcript(heard, question, None, "en").wer, 3),
               "cascade": cascade, "cascade_agree": agreement(typed, cascade, question, keys)[0]}
        if i < args.cli and args.assets is None:  # the CLI runs the shipped brain
            row["cli"] = cli_reply(wav, args.threads, args.max_new_tokens, args.instruction)
            row["cli_equals_in_process"] = row["cli"] == spoken
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    n = len(rows)
    summary = {"cpu": describe_cpu(), "brain": name, "questions": n, "voice": "flite rms (dev speaker)",
               "instruction": args.instruction,
               "agreement": round(sum(r["agree"] for r in rows) / n, 3),
               "agreement_by_rule": {k: [sum(r["agree"] for r in rows if r["rule"] == k),
                                         sum(r["rule"] == k for r in rows)] for k in ("key", "content-f1")},
               "typed_correct": round(sum(r["typed_correct"] for r in rows) / n, 3),
               "spoken_correct": round(sum(r["spoken_correct"] for r in rows) / n, 3),
               "diagnostic_transcript_wer_mean": round(float(np.mean([r["transcript_wer"] for r in rows])), 3),
               "diagnostic_cascade_agreement": round(sum(r["cascade_agree"] for r in rows) / n, 3),
               "cli_checked": [r["cli_equals_in_process"] for r in rows if "cli" in r],
               "median_spoken_s": float(np.median([r["spoken_s"] for r in rows]))}
    (args.out / "report.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1,
                                                     ensure_ascii=False) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
