"""Diagnostic: how much do speech units depend on the voice rather than on what is said?

A SpeechLM predicts units from text and a voice prompt. Units that change with the voice for the same
sounds make that prediction harder (the model must learn each voice's units for each phoneme, and the k
units of a row are sampled independently). This renders the same sentences with several training voices
(the corpus builder's engines, allow-list checked), aligns every pair of renditions by DTW on their features,
and reports how often the two voices get the same unit at aligned frames: agreement, the agreement expected by
chance from the unit frequencies, and Cohen's kappa = (agreement - chance) / (1 - chance).

Unit sets: the shipped mouth's (unless ``--no-shipped``: its codebook over Whisper-base layer 4), and k-means codebooks
fitted here on the same renditions of other sentences, for each ``--layers`` x ``--units`` and with or without
per-utterance mean / variance normalisation of the features (``cmvn``: removes some of the voice).

    python recipes/unit_invariance.py --manifest /work/corpus/manifest.jsonl --sentences 30 --fit-sentences 120 \\
        --voices espeak:en-us espeak:en-us+f3 espeak:en-us+grandma flite:kal16 flite:awb --layers 4 6 --units 512 128 64

Measurement only; reserved evaluation voices are refused. Name the corpus's train voices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgm_omni.audio import resample  # noqa: E402
from mgm_omni.data.engines import EngineSet  # noqa: E402
from mgm_omni.data.speakers import Speaker  # noqa: E402
from mgm_omni.generation.wave.own_frontend import load_unit_tokenizer  # noqa: E402
from mgm_omni.models.unit_tokenizer import WhisperUnitTokenizer  # noqa: E402
from mgm_omni.training.kmeans import fit_kmeans  # noqa: E402
from mgm_omni.training.speechlm_rows import read_jsonl  # noqa: E402
from recipes.speech_tokenizer import TokenizerSection, whisper_encoder  # noqa: E402
from recipes.unit_features import clip_features  # noqa: E402

SHIPPED_UNITS = Path(__file__).resolve().parents[1] / "mgm_omni/hub/assets/mouth/units"


def renderers(voices: list[str]):
    """One function per voice spec: text -> (S,) 16 kHz wave, through the corpus builder's engines. Each spec
    is checked against the allow-list (``VoiceError`` for a reserved or unknown voice) before anything runs."""
    speakers = [Speaker(voices={"en": (spec,)}) for spec in voices]
    engines = EngineSet()

    def render(speaker: Speaker):
        def run(text: str) -> torch.Tensor:
            audio, rate = engines.synthesize(speaker.parsed["en"][0], text, "en", speaker)
            return resample(torch.from_numpy(audio), rate, 16000)
        return run

    return [render(sp) for sp in speakers], engines


def dtw_path(a: torch.Tensor, b: torch.Tensor) -> list[tuple[int, int]]:
    """Frame pairs of the cheapest monotonic alignment of (Ta, d) and (Tb, d) under cosine distance."""
    an, bn = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    cost = (1 - an @ bn.T).double().numpy()
    ta, tb = cost.shape
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, ta + 1):
        for j in range(1, tb + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    path, i, j = [], ta, tb
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return path[::-1]


def kappa(pairs: np.ndarray, k: int) -> dict[str, float]:
    """Agreement, chance agreement and Cohen's kappa of (N, 2) unit pairs."""
    agree = float((pairs[:, 0] == pairs[:, 1]).mean())
    pa = np.bincount(pairs[:, 0], minlength=k) / len(pairs)
    pb = np.bincount(pairs[:, 1], minlength=k) / len(pairs)
    chance = float((pa * pb).sum())
    return {"agreement": round(agree, 4), "chance": round(chance, 4),
            "kappa": round((agree - chance) / (1 - chance), 4)}


def cmvn(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-5)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True, help="its dev-split EN texts are the sentences")
    ap.add_argument("--sentences", type=int, default=30, help="sentences measured")
    ap.add_argument("--fit-sentences", type=int, default=120, help="other sentences the codebooks are fitted on")
    ap.add_argument("--voices", nargs="+", required=True)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 6])
    ap.add_argument("--units", type=int, nargs="+", default=[512, 128])
    ap.add_argument("--no-shipped", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = [r["text"] for r in read_jsonl(args.manifest)
             if r.get("split") == "dev" and r.get("lang") == "en" and r.get("kind", "utterance") == "utterance"
             and 2.0 <= r["duration"] <= 6.0]
    if len(texts) < args.sentences + args.fit_sentences:
        raise SystemExit(f"{len(texts)} dev EN sentences of 2-6 s; asked for {args.sentences + args.fit_sentences}")
    measured, fitted = texts[: args.sentences], texts[args.sentences: args.sentences + args.fit_sentences]
    cfg, state = whisper_encoder(TokenizerSection(output="", layer=max(args.layers)))
    tok = WhisperUnitTokenizer(cfg)
    tok.load_state_dict({**tok.state_dict(), **state}, strict=True)
    tok.eval()

    render, engines = renderers(args.voices)

    def feats(sentences):
        return [[clip_features(tok, speak(s), args.layers)[0] for speak in render] for s in sentences]

    try:
        meas, fit = feats(measured), feats(fitted)
    finally:
        engines.close()
    print(f"rendered {len(measured)} + {len(fitted)} sentences x {len(args.voices)} voices", file=sys.stderr)
    paths = {}  # (sentence, voice a, voice b) -> DTW path on the deepest layer's features
    deepest = max(args.layers)
    for s, per_voice in enumerate(meas):
        for a, b in itertools.combinations(range(len(args.voices)), 2):
            paths[s, a, b] = dtw_path(cmvn(per_voice[a][deepest]), cmvn(per_voice[b][deepest]))

    def measure(assign) -> dict[str, float]:
        pairs = []
        for (s, a, b), path in paths.items():
            ua, ub = assign(meas[s][a]), assign(meas[s][b])
            pairs += [(int(ua[i]), int(ub[j])) for i, j in path]
        return np.array(pairs)

    report = {"voices": args.voices, "sentences": len(measured), "fit_sentences": len(fitted), "results": []}
    if not args.no_shipped:
        shipped = load_unit_tokenizer(SHIPPED_UNITS)
        layer = shipped.cfg.layer
        if layer in args.layers:
            pairs = measure(lambda f: shipped.assign(shipped.standardise(f[layer])))
            report["results"].append({"units": f"shipped (layer {layer}, K {shipped.cfg.num_units})",
                                      **kappa(pairs, shipped.cfg.num_units)})
    for layer, k, norm in itertools.product(args.layers, args.units, (False, True)):
        x = torch.cat([cmvn(f[layer]) if norm else f[layer] for per in fit for f in per]).double()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
        centroids = fit_kmeans((x - mean) / std, k, 20, seed=0, tol=1e-4).centroids

        def assign(f, layer=layer, norm=norm, mean=mean, std=std, c=centroids):
            z = ((cmvn(f[layer]) if norm else f[layer]).double() - mean) / std
            return ((z.square().sum(1, keepdim=True) - 2 * z @ c.T + c.square().sum(1))).argmin(1)

        report["results"].append({"units": f"layer {layer}, K {k}{', cmvn' if norm else ''}",
                                  **kappa(measure(assign), k)})
        print(json.dumps(report["results"][-1]), file=sys.stderr, flush=True)
    for r in report["results"]:
        print(f"{r['units']:<28} agreement {r['agreement']:.3f}  chance {r['chance']:.3f}  kappa {r['kappa']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
