"""Default brain, stage 2 data: spoken questions whose targets are the LLM's own answers to them typed.

Self-distillation (spec §5, issue 16): the brain must answer what it hears as its LLM answers the same words
typed, so each training item is

* the user turn: the audio alone (``<speech>``, the prompt ``mgm-omni chat --audio-file q.wav`` builds);
* the target: the frozen LLM's greedy reply to the question's text typed as that turn, with the chat's own
  system prompt and text settings (at most ``--max-new-tokens`` tokens; an unfinished reply gets no
  end-of-turn id in training).

The questions are written here from templates (capitals, counts, colours, opposites, arithmetic, authors,
elements, languages, requests ...). None of them is one of the 30 evaluation questions of
``recipes/brain_questions_eval.py``, and any question whose content words contain all of an evaluation
question's (or the other way round) is dropped; the same template with another entity is kept (checked below, printed). Each question is spoken by ``--voices`` different
training speakers of the corpus roster (espeak, flite, festival; never a dev speaker, so never the
evaluation's flite ``rms``), then packed into 30 s windows and run through both frozen towers once, stored as
:class:`recipes.brain_default_features.FeatureStore` windows whose segments carry ``text`` (the question, used
by the alignment term) and ``answer`` (the target).

    .venv/bin/python recipes/brain_stage2_data.py --out outputs/brain_qa [--voices 2] [--max-new-tokens 48]

Resumable: answers are cached in ``answers.jsonl``; windows already stored are skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipes.brain_default_features import (  # noqa: E402
    SR, TOKEN_SAMPLES, WINDOW_SAMPLES, FeatureStore, encode_window)
from recipes.brain_questions_eval import (  # noqa: E402
    QUESTIONS as EVAL_QUESTIONS, STOP, chat_settings, normalise, one_turn_reply)

CAPITALS = ["Canada", "Australia", "Egypt", "Russia", "China", "India", "Mexico", "Argentina", "Greece", "Portugal",
            "Sweden", "Norway", "Poland", "Ireland", "Kenya", "Peru", "Turkey", "Thailand", "Vietnam", "Cuba",
            "Austria", "Belgium", "the Netherlands", "Switzerland", "Finland", "Denmark", "Chile", "Iran",
            "South Korea", "Indonesia", "the United States", "England", "Scotland", "Hungary", "Ukraine"]
LANGUAGES = ["Mexico", "Argentina", "Russia", "China", "Portugal", "the Netherlands", "Sweden", "Greece", "Poland",
             "Turkey", "Egypt", "Iran", "Korea", "Vietnam", "Thailand", "Austria", "Australia", "Chile", "Cuba"]
CURRENCIES = ["Japan", "the United States", "India", "China", "Russia", "Mexico", "Switzerland", "South Korea",
              "Turkey", "Canada", "Australia"]
COUNTS = [("seconds", "minute"), ("weeks", "year"), ("days", "year"), ("years", "century"), ("years", "decade"),
          ("centimeters", "meter"), ("meters", "kilometer"), ("grams", "kilogram"), ("players", "soccer team"),
          ("strings", "violin"), ("keys", "piano"), ("cards", "deck of cards"), ("letters", "English alphabet"),
          ("planets", "solar system"), ("colors", "rainbow"), ("sides", "square"), ("sides", "hexagon"),
          ("sides", "pentagon"), ("sides", "octagon"), ("wheels", "bicycle"), ("wheels", "car"),
          ("teeth", "adult human"), ("bones", "human body"), ("hearts", "octopus"), ("eyes", "bee"),
          ("legs", "dog"), ("legs", "bird"), ("legs", "insect"), ("legs", "horse"), ("legs", "ant"),
          ("arms", "octopus"), ("legs", "crab"), ("legs", "cat")]
COLOURS = ["grass", "snow", "a banana", "a ripe tomato", "coal", "milk", "an orange", "a lemon", "a fire truck",
           "a polar bear", "a crow", "chocolate", "a lime", "a flamingo", "the sun", "an emerald", "a ruby"]
OPPOSITES = ["big", "fast", "up", "day", "happy", "old", "light", "open", "early", "wet", "loud", "rich", "strong",
             "empty", "soft", "tall", "inside", "left", "love", "win", "buy", "push", "north", "summer", "always"]
AUTHORS = ["Pride and Prejudice", "Nineteen Eighty-Four", "Harry Potter", "The Odyssey", "Don Quixote",
           "War and Peace", "Moby Dick", "The Adventures of Tom Sawyer", "Oliver Twist", "The Hobbit",
           "A Brief History of Time", "The Origin of Species", "Frankenstein", "Dracula", "Little Women"]
ELEMENTS = ["silver", "iron", "oxygen", "hydrogen", "sodium", "carbon", "helium", "nitrogen", "calcium", "copper",
            "lead", "potassium", "neon", "zinc", "uranium"]
FACTS = ["dolphins", "the moon", "volcanoes", "honey bees", "elephants", "the ocean", "penguins", "rainbows",
         "the human brain", "owls", "tea", "the Great Wall of China", "octopuses", "lightning", "sleep",
         "cats", "bananas", "Antarctica", "the Amazon rainforest", "trains"]
SYNONYMS = ["happy", "big", "quick", "smart", "begin", "angry", "beautiful", "tired", "easy", "funny", "brave"]
ANIMAL_YOUNG = ["a cat", "a dog", "a cow", "a horse", "a sheep", "a frog", "a bear", "a kangaroo", "a duck"]
SHORT = [
    "What is the boiling point of water in Fahrenheit?", "What is the freezing point of water in Celsius?",
    "Who was the first person to walk on the moon?", "Who discovered penicillin?", "Who invented the telephone?",
    "Who developed the theory of relativity?", "Who painted the Sistine Chapel ceiling?",
    "What is the longest river in the world?", "What is the largest desert in the world?",
    "What is the smallest planet in our solar system?", "What is the hottest planet in our solar system?",
    "Which planet has the most famous rings?", "What is the closest star to the Earth?",
    "What do bees make?", "What do caterpillars turn into?", "What is the largest mammal on Earth?",
    "What is the fastest land animal?", "Which bird is a symbol of peace?", "What is the largest bird?",
    "What do cows drink?", "What do pandas eat?", "Where do penguins live?", "What is a baby kangaroo called?",
    "What is the hardest natural substance?", "What gas do humans breathe in to live?",
    "What is the main ingredient of bread?", "What is ice made of?", "What is the center of an atom called?",
    "How many bones does a shark have?", "What is the square root of sixty four?", "What is half of fifty?",
    "What is ten percent of two hundred?", "What comes after Tuesday?", "What month comes after March?",
    "What is the first month of the year?", "Which season comes after winter?", "What is the shape of a ball?",
    "What do you call a shape with four equal sides?", "What is frozen water called?",
    "What instrument has black and white keys?", "What sport is played at Wimbledon?",
    "How many players are on a basketball team on the court?", "What is the national animal of Australia?",
    "What is the biggest country in the world by area?", "What is the most spoken language in the world?",
    "Which ocean lies between Europe and America?", "What is the capital city of the state of New York?",
    "What is the name of our galaxy?", "What organ pumps blood through the body?",
    "What part of the plant makes food from sunlight?", "What do we call animals that eat only plants?",
    "How many wings does a butterfly have?", "What is the largest continent?", "What is the smallest continent?",
    "Which animal has a very long neck?", "Which animal is known for its black and white stripes?",
    "What is the color of an emerald?", "Who was the first president of the United States?",
    "Which country gave the Statue of Liberty to the United States?", "What is the tallest animal?",
    "What is the main language of Canada's Quebec province?", "What does a thermometer measure?",
    "What is the opposite of north?", "What do you use to write on a blackboard?",
    "How do I make a cup of tea?", "Can you recommend a good book for children?", "Tell me a short joke.",
    "Give me three tips for sleeping better.", "What should I pack for a beach trip?",
    "How can I learn a new language quickly?", "What is a healthy breakfast?", "Say hello in French.",
    "How do you say thank you in Spanish?", "How do you say good morning in German?",
    "What is the plural of mouse?", "What is the past tense of run?", "Spell the word cat.",
    "Name three fruits that are red.", "Name a musical instrument with strings.", "What rhymes with light?",
    "Why is the sky dark at night?", "Why do leaves change color in autumn?", "Why do we need to drink water?",
    "What is the weather usually like in a desert?", "What is a noun?", "What is photosynthesis?",
    "Please describe a rainbow in one sentence.", "Write a short sentence about the sea.",
    "Count from one to five.", "What is two plus two?", "Is a tomato a fruit or a vegetable?",
    "Is a whale a fish or a mammal?", "Can penguins fly?", "Do fish sleep?",
]


def training_questions() -> list[str]:
    """The templated questions, shuffled deterministically."""
    qs = [f"What is the capital of {c}?" for c in CAPITALS]
    qs += [f"What language do people speak in {c}?" for c in LANGUAGES]
    qs += [f"What is the currency of {c}?" for c in CURRENCIES]
    qs += [f"How many {a} are there in a {b}?" if not b.startswith(("adult", "human", "deck", "English", "solar",
                                                                     "rainbow", "soccer"))
           else f"How many {a} are there in the {b}?" for a, b in COUNTS if a not in ("legs", "arms", "hearts",
                                                                                      "eyes")]
    qs += [f"How many {a} does a {b} have?" for a, b in COUNTS if a in ("legs", "arms", "hearts", "eyes")]
    qs += [f"What color is {t}?" for t in COLOURS]
    qs += [f"What is the opposite of {w}?" for w in OPPOSITES]
    qs += [f"Who wrote {b}?" for b in AUTHORS]
    qs += [f"What is the chemical symbol for {e}?" for e in ELEMENTS]
    qs += [f"Tell me a fun fact about {t}." for t in FACTS]
    qs += [f"Give me a word that means the same as {w}." for w in SYNONYMS]
    qs += [f"What is a baby {a.split()[1]} called?" for a in ANIMAL_YOUNG]
    rng = random.Random(0)
    for _ in range(40):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        qs.append(rng.choice([f"What is {a} plus {b}?", f"What is {a} times {b}?", f"What is {a + b} minus {b}?"]))
    qs += SHORT
    qs = list(dict.fromkeys(qs))
    rng.shuffle(qs)
    return qs


def content_words(text: str) -> set[str]:
    return {w for w in normalise(text).split() if w not in STOP}


def disjoint_from_eval(questions: list[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a question is dropped when its content words contain all of an evaluation question's,
    or the other way round (the same template with another entity, "the capital of Chile" beside "the
    capital of France", is kept)."""
    evals = [content_words(q) for q, _ in EVAL_QUESTIONS]
    kept, dropped = [], []
    for q in questions:
        words = content_words(q)
        (dropped if any(e <= words or words <= e for e in evals) else kept).append(q)
    return kept, dropped


def typed_answers(questions: list[str], cache: Path, max_new_tokens: int) -> dict[str, dict]:
    """The default brain's greedy reply to each question typed, as ``mgm-omni chat -m`` gives it; cached."""
    from mgm_omni.generation.mllm.runner import MLLM
    from mgm_omni.hub.tiny_brain import default_mllm, mllm_location

    done = {}
    if cache.is_file():
        done = {r["question"]: r for r in map(json.loads, cache.read_text().splitlines()) if r}
    todo = [q for q in questions if q not in done]
    if not todo:
        return done
    mllm = MLLM.from_pretrained(mllm_location(default_mllm()), dtype=torch.bfloat16, towers=("audio",),
                                temperature=0.0)
    text_cfg = chat_settings(mllm, max_new_tokens)
    start = time.perf_counter()
    with open(cache, "a") as f:
        for i, q in enumerate(todo):
            reply = one_turn_reply(mllm, text_cfg, q)
            ids = mllm.tokenizer.encode(reply)
            row = {"question": q, "answer": reply, "finished": len(ids) < max_new_tokens}
            done[q] = row
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            if (i + 1) % 20 == 0:
                print(f"answers {i + 1}/{len(todo)}: {(time.perf_counter() - start) / (i + 1):.2f} s each", flush=True)
    return done


def training_speakers() -> list:
    """English-speaking roster speakers of the espeak, flite and festival families that are not dev speakers."""
    from mgm_omni.data.speakers import DEFAULT_DEV_SPEAKERS, default_roster

    return [s for s in default_roster() if s.id not in DEFAULT_DEV_SPEAKERS and "en" in s.parsed
            and s.family in ("espeak", "flite", "festival")]


def render(question: str, speaker, engines, rng: random.Random) -> np.ndarray:
    """One question spoken by one training speaker, through the corpus's signal chain, at 16 kHz."""
    from mgm_omni.data.postprocess import SignalConfig, level, to_corpus

    signal = SignalConfig(sample_rate=SR)
    voice = rng.choice(speaker.parsed["en"])
    raw, sr = engines.synthesize(voice, question, "en", speaker)
    return level(to_corpus(raw, sr, signal, vtl=speaker.vtl), SR, signal).astype(np.float32)


def pack(clips: list[dict], rng: random.Random) -> list[dict]:
    """Clips (each with ``wave``) into windows: token-aligned starts, 0.2-0.6 s apart, filled to 40-100 %."""
    windows, i = [], 0
    while i < len(clips):
        limit = int(WINDOW_SAMPLES * rng.uniform(0.4, 1.0))
        at, segments = rng.randrange(0, 4) * TOKEN_SAMPLES, []
        while i < len(clips):
            n = clips[i]["wave"].shape[0]
            if (at + n > limit and segments) or at + n > WINDOW_SAMPLES:
                break
            segments.append({**{k: v for k, v in clips[i].items() if k != "wave"}, "start": at, "samples": n,
                             "tok": [at // TOKEN_SAMPLES, -(-(at + n) // TOKEN_SAMPLES)], "wave": clips[i]["wave"]})
            i += 1
            at = -(-(at + n + TOKEN_SAMPLES * rng.randrange(1, 4)) // TOKEN_SAMPLES) * TOKEN_SAMPLES
        if not segments:  # a clip longer than a window: skip it
            i += 1
            continue
        windows.append({"window": len(windows), "lang": "en", "segments": segments})
    return windows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "brain_qa")
    ap.add_argument("--voices", type=int, default=2, help="training speakers per question")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    questions, dropped = disjoint_from_eval(training_questions())
    print(f"{len(questions)} training questions; dropped as too close to an evaluation question: {dropped}")
    answers = typed_answers(questions, args.out / "answers.jsonl", args.max_new_tokens)
    store = FeatureStore(args.out / "features")
    if store.windows():
        print(f"{len(store.windows())} windows already stored in {store.root}; delete it to rebuild")
        return
    from mgm_omni.data.engines import EngineSet
    from mgm_omni.hub.default_brain import brain_parts

    rng = random.Random(args.seed)
    speakers = training_speakers()
    print(f"speakers: {', '.join(s.id for s in speakers)}")
    engines = EngineSet()
    clips = []
    try:
        for q in questions:
            for speaker in rng.sample(speakers, args.voices):
                clips.append({"text": q, "answer": answers[q]["answer"], "finished": answers[q]["finished"],
                              "speaker": speaker.id, "wave": render(q, speaker, engines, rng)})
    finally:
        engines.close()
    rng.shuffle(clips)
    windows = pack(clips, rng)
    tower = brain_parts().tower(getattr(torch, args.dtype))
    for window in windows:
        wave = torch.zeros(WINDOW_SAMPLES)
        for seg in window["segments"]:
            x = torch.from_numpy(seg.pop("wave"))
            wave[seg["start"]:seg["start"] + x.shape[0]] = x
        main_f, aux_f = encode_window(tower, wave)
        store.append(window, main_f, aux_f)
    print(f"{len(clips)} clips ({sum(c['wave'].shape[0] for c in clips) / SR / 60:.1f} min) in {len(windows)} "
          f"windows written to {store.root}")


if __name__ == "__main__":
    main()
