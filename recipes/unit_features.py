"""Cache the inputs of a learned (FSQ + CTC) speech tokenizer: per clip, pooled 25 Hz Whisper features of the
chosen layers, the clip's Whisper log-mel pooled to 25 Hz (the reconstruction target) and its G2P phonemes.

Extracting once lets the tokenizer train for many epochs without running Whisper again:

    .venv/bin/python recipes/unit_features.py --manifest outputs/mouth_gate/corpus/manifest.jsonl \
        --out outputs/ctc_units/features --layers 4 6 [--splits train dev dev_speakers] [--threads 2]

Writes ``<out>/<split>.npz`` with ``layer{L}`` (N, 512) float16 (all clips concatenated), ``mel`` (N, 80)
float16, ``offsets`` (clips + 1,), ``phones`` (flat int32 phoneme ids, 1-based) and ``phone_offsets``, plus
``<out>/meta.json`` (clip ids per split, the phoneme table, layers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgm_omni.audio import load_audio, log_mel  # noqa: E402
from mgm_omni.models.unit_tokenizer import WhisperUnitTokenizer  # noqa: E402
from mgm_omni.training.speechlm_rows import read_jsonl  # noqa: E402
from recipes.mouth_unit_probe import phonemes  # noqa: E402
from recipes.speech_tokenizer import TokenizerSection, whisper_encoder  # noqa: E402


@torch.no_grad()
def clip_features(tok: WhisperUnitTokenizer, wave: torch.Tensor, layers: list[int]):
    """(S,) 16 kHz wave -> {layer: (T25, d)}, (T25, n_mels) pooled log-mel; 30 s blocks concatenated."""
    block = 30 * 16000
    out = {layer: [] for layer in layers}
    mels = []
    for start in range(0, wave.shape[0], block):
        piece = wave[start:start + block]
        if piece.shape[0] < 640:
            continue
        mel = log_mel(piece, tok.cfg.mel)  # (n_mels, T100)
        for layer, feats in tok.pooled_layers(mel, layers).items():
            out[layer].append(feats)
        t25 = out[layers[0]][-1].shape[0]
        m = F.avg_pool1d(mel[None], 4, 4, ceil_mode=True)[0].T[:t25]
        mels.append(F.pad(m, (0, 0, 0, t25 - m.shape[0]), mode="replicate") if m.shape[0] < t25 else m)
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(mels)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 6])
    ap.add_argument("--splits", nargs="+", default=["train", "dev", "dev_speakers"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mgm_omni.text.g2p import G2P

    cfg, state = whisper_encoder(TokenizerSection(output="", layer=max(args.layers)))
    tok = WhisperUnitTokenizer(cfg)
    tok.load_state_dict({**tok.state_dict(), **state}, strict=True)
    tok.eval()
    g2p = G2P()
    table: dict[str, int] = {}
    meta = {"layers": args.layers, "manifest": str(args.manifest), "ids": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = list(read_jsonl(args.manifest))
    for split in args.splits:
        feats = {layer: [] for layer in args.layers}
        mels, phones, offsets, poffsets, ids = [], [], [0], [0], []
        start, seconds = time.perf_counter(), 0.0
        for row in rows:
            if row.get("split", "train") != split:
                continue
            wave, _ = load_audio(args.manifest.parent / row["audio"], sample_rate=16000, max_seconds=None)
            f, m = clip_features(tok, wave, args.layers)
            for layer in args.layers:
                feats[layer].append(f[layer].half().numpy())
            mels.append(m.half().numpy())
            p = [table.setdefault(s, len(table) + 1) for s in phonemes(g2p, row["text"])]
            phones.extend(p)
            offsets.append(offsets[-1] + m.shape[0])
            poffsets.append(len(phones))
            ids.append(row["id"])
            seconds += wave.numel() / 16000
            if len(ids) % 500 == 0:
                wall = time.perf_counter() - start
                print(f"{split}: {len(ids)} clips, {seconds:.0f} s audio in {wall:.0f} s", flush=True)
        if not ids:
            continue
        np.savez(args.out / f"{split}.npz", mel=np.concatenate(mels), offsets=np.asarray(offsets),
                 phones=np.asarray(phones, dtype=np.int32), phone_offsets=np.asarray(poffsets),
                 **{f"layer{layer}": np.concatenate(feats[layer]) for layer in args.layers})
        meta["ids"][split] = ids
        print(f"{split}: {len(ids)} clips, {seconds / 3600:.2f} h in {time.perf_counter() - start:.0f} s", flush=True)
    meta["phones"] = table
    (args.out / "meta.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
