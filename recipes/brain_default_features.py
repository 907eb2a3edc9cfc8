"""Default brain, stage 1 data: corpus utterances packed into 30 s windows, both frozen towers run once.

The encoders cost the same for a 3 s clip as for a full window (every window is a padded 30 s mel), so
utterances of one language are packed into windows (each starting on a token boundary, 0.2 s at k = 5, with
0.2-0.6 s of silence between them, each window filled to a random 40-100 % so the towers also see trailing
silence) and encoded once. What is stored per window: the main tower's (750, 512) and the aux tower's
(1500, 384) features in bf16, and the token span of each utterance, so training crops an utterance (or a run
of them) exactly as inference with ``speech_trim_padding`` keeps the tokens of real audio.

Only rows of ``split == "train"`` are read (the corpus keeps dev speakers and dev/test sentences out of it).

    python recipes/brain_default_features.py --corpus /work/corpus --out outputs/brain_features \
        --windows 400 [--lang en] [--seed 0]

Resumable and extensible: new windows are planned (seed + windows stored) from the training utterances not yet
in ``windows.jsonl``, so a larger ``--windows`` later adds unseen utterances only.
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

from mgm_omni.audio import load_audio, log_mel  # noqa: E402
from mgm_omni.data.manifest import Manifest  # noqa: E402
from mgm_omni.generation.mllm.long_audio import tower_mel  # noqa: E402
from mgm_omni.models.audio_encoder import DualAudioTower  # noqa: E402

SR = 16000
TOKEN_SAMPLES = 3200  # one LLM token: k = 5 main frames of 40 ms
WINDOW_SAMPLES = 480000
MAIN_SHAPE, AUX_SHAPE = (750, 512), (1500, 384)


def train_rows(corpus: Path, langs: tuple[str, ...], max_seconds: float = 25.0) -> list:
    """Training utterances of the corpus: ``manifest.jsonl`` and the shards still being rendered, by id."""
    files = [f for f in [corpus / "manifest.jsonl", *sorted((corpus / "shards").glob("*.jsonl"))] if f.is_file()]
    rows = list({r.id: r for f in files for r in Manifest.read(f, partial_tail=True)}.values())
    keep = [r for r in rows if r.split == "train" and r.kind == "utterance" and r.lang in langs
            and 0.3 < r.duration <= max_seconds and r.text.strip()]
    if not keep:
        raise SystemExit(f"{corpus}: no training utterances in {', '.join(map(str, files))}")
    return sorted(keep, key=lambda r: r.id)


def plan_windows(rows: list, n_windows: int, seed: int) -> list[dict]:
    """Pack shuffled rows (one language per window) into windows; each segment's token span is recorded."""
    rng = random.Random(seed)
    by_lang: dict[str, list] = {}
    for r in rows:
        by_lang.setdefault(r.lang, []).append(r)
    for group in by_lang.values():
        rng.shuffle(group)
    cursors = {lang: 0 for lang in by_lang}
    langs = sorted(by_lang)
    plan = []
    while len(plan) < n_windows and any(cursors[lang] < len(by_lang[lang]) for lang in langs):
        lang = langs[len(plan) % len(langs)]
        if cursors[lang] >= len(by_lang[lang]):  # this language is used up: the others take its turns
            live = [x for x in langs if cursors[x] < len(by_lang[x])]
            lang = live[len(plan) % len(live)]
        group = by_lang[lang]
        limit = int(WINDOW_SAMPLES * rng.uniform(0.4, 1.0))
        at, segments = rng.randrange(0, 4) * TOKEN_SAMPLES, []
        while cursors[lang] < len(group):
            row = group[cursors[lang]]
            n = int(round(row.duration * SR))
            if at + n > limit and segments:
                break
            if at + n > WINDOW_SAMPLES:
                cursors[lang] += 1  # cannot fit even alone at this offset: skip it
                continue
            segments.append({"id": row.id, "audio": row.audio, "text": row.text, "speaker": row.speaker,
                             "start": at, "samples": n,
                             "tok": [at // TOKEN_SAMPLES, -(-(at + n) // TOKEN_SAMPLES)]})
            cursors[lang] += 1
            at += n + TOKEN_SAMPLES * rng.randrange(1, 4)
            at = -(-at // TOKEN_SAMPLES) * TOKEN_SAMPLES
        if segments:
            plan.append({"window": len(plan), "lang": lang, "segments": segments})
    return plan


def render_window(window: dict, corpus: Path) -> torch.Tensor:
    """The window's 30 s of 16 kHz samples: its utterances at their offsets, silence elsewhere."""
    wave = torch.zeros(WINDOW_SAMPLES)
    for seg in window["segments"]:
        x, _ = load_audio(corpus / seg["audio"], SR)
        x = x.float().flatten()[: seg["samples"]]
        wave[seg["start"]:seg["start"] + x.shape[0]] = x
    return wave


@torch.no_grad()
def encode_window(tower: DualAudioTower, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W,) samples -> main (750, 512) and aux (1500, 384) features (the towers' own dtype)."""
    dtype = tower.speech_tower.conv1.weight.dtype
    main, aux = tower(log_mel(wave[None], tower_mel(tower)).to(dtype))
    return main[0], aux[0]


class FeatureStore:
    """Append-only bf16 features (``main.bin``, ``aux.bin``) + ``windows.jsonl``; read back by memory map."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.index = root / "windows.jsonl"

    def windows(self) -> list[dict]:
        if not self.index.is_file():
            return []
        return [json.loads(line) for line in self.index.read_text().splitlines() if line.strip()]

    def append(self, window: dict, main: torch.Tensor, aux: torch.Tensor) -> None:
        n = len(self.windows())
        for name, x in (("main", main), ("aux", aux)):
            with open(self.root / f"{name}.bin", "r+b" if (self.root / f"{name}.bin").exists() else "wb") as f:
                f.seek(n * x.numel() * 2)  # a crash after this write and before the index line is overwritten
                f.write(x.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
        with open(self.index, "a") as f:
            f.write(json.dumps({**window, "row": n}, ensure_ascii=False) + "\n")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory maps (windows, 750, 512) and (windows, 1500, 384) of int16 bf16 bits."""
        n = len(self.windows())
        main = np.memmap(self.root / "main.bin", np.int16, "r", shape=(n, *MAIN_SHAPE))
        aux = np.memmap(self.root / "aux.bin", np.int16, "r", shape=(n, *AUX_SHAPE))
        return main, aux


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    ap.add_argument("--out", type=Path, default=Path("outputs/brain_features"))
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--lang", nargs="+", default=["en", "zh"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from mgm_omni.hub.default_brain import brain_parts

    store = FeatureStore(args.out)
    done = len(store.windows())
    stored = {seg["id"] for w in store.windows() for seg in w["segments"]}
    rows = [r for r in train_rows(args.corpus, tuple(args.lang)) if r.id not in stored]
    plan = [None] * done + plan_windows(rows, args.windows - done, args.seed + done)
    tower = brain_parts().tower(getattr(torch, args.dtype))
    start = time.perf_counter()
    for i, window in enumerate(plan[done:], start=done):
        main_f, aux_f = encode_window(tower, render_window(window, args.corpus))
        store.append(window, main_f, aux_f)
        if (i + 1) % 10 == 0 or i + 1 == len(plan):
            rate = (time.perf_counter() - start) / (i + 1 - done)
            print(f"window {i + 1}/{len(plan)}: {rate:.2f} s per window, "
                  f"{sum(len(w['segments']) for w in plan[done:i + 1])} new utterances", flush=True)


if __name__ == "__main__":
    main()
