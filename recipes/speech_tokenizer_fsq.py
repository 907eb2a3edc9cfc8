"""Recipe: a learned 25 Hz speech tokenizer, FSQ over frozen Whisper-base features, trained with a CTC phoneme loss.

The k-means units of ``recipes/speech_tokenizer.py`` carry the phonemes only loosely (a CTC probe on them reaches
PER 0.28 on dev speakers, and a flow trained on them is not intelligible). Here the quantiser is learned so
that the units must carry the phonemes (the issue's "small learned VQ/FSQ bottleneck trained with a CTC loss
on transcripts"):

    Whisper-base layer L (frozen, pooled to 25 Hz) -> standardise -> pre-net (convolutions) -> FSQ (K units)
      -> [training only] a convolutional decoder -> CTC over the G2P phonemes (two CTC frames per unit)
      -> [training only] a small convolutional head -> the clip's 25 Hz log-mel (L1), which keeps the units
         local and acoustic, what the flow needs.

Only the tokenizer part (Whisper layers, standardisation, pre-net, FSQ levels) is saved, as the same
``.safetensors`` format ``mgm_omni.models.unit_tokenizer`` reads for k-means units. It trains on the cache of
``recipes/unit_features.py``; ``--units-out`` also writes the unit shards of every cached split (from the cached
float16 features: for a gate, not for shipping, where the tokenizer runs on the audio):

    .venv/bin/python recipes/unit_features.py --manifest outputs/mouth_gate/corpus/manifest.jsonl \
        --out outputs/ctc_units/features --layers 4 6
    .venv/bin/python recipes/speech_tokenizer_fsq.py --features outputs/ctc_units/features --layer 6 \
        --minutes 25 --out outputs/ctc_units/unit_tokenizer.safetensors --units-out outputs/ctc_units/units

The report (``<out>.json``) has the loss history, the greedy-CTC phoneme error rate (PER) of the training
decoder per split and language, how many of the K units are used and how evenly (perplexity), and how
predictable a unit is from the one before (``next_unit_bits``: the bigram conditional entropy, in-sample;
``repeats``: the share of units equal to the one before), which is what the SpeechLM has to predict.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgm_omni.models.unit_tokenizer import FSQPreNet, WhisperUnitTokenizer  # noqa: E402
from mgm_omni.training.unit_shards import write_units  # noqa: E402
from recipes.mouth_unit_probe import edit_distance, greedy  # noqa: E402
from recipes.speech_tokenizer import TokenizerSection, whisper_encoder  # noqa: E402


class Split:
    """One cached split: features (N, d), pooled mel (N, 80), per-clip offsets and phoneme ids."""

    def __init__(self, path: Path, layer: int, langs: list[str]) -> None:
        z = np.load(path)
        self.x = torch.from_numpy(z[f"layer{layer}"])
        self.mel = torch.from_numpy(z["mel"])
        self.off = z["offsets"]
        self.phones = z["phones"]
        self.poff = z["phone_offsets"]
        self.langs = langs

    def __len__(self) -> int:
        return len(self.off) - 1

    def clip(self, i: int):
        a, b = self.off[i], self.off[i + 1]
        return self.x[a:b].float(), self.mel[a:b].float(), self.phones[self.poff[i]:self.poff[i + 1]].tolist()


class Trainer(nn.Module):
    """Pre-net + FSQ (the tokenizer's own modules) with the training-only CTC decoder and mel head.

    The CTC decoder is convolutional (3 blocks of kernel 5: +-6 units, 240 ms): a BiLSTM decoder sat at the CTC
    plateau for 400 steps here, the convolutions left it after about 100."""

    def __init__(self, tok: WhisperUnitTokenizer, n_phones: int, dim: int = 256) -> None:
        super().__init__()
        self.tok = tok
        dims = len(tok.quantiser.levels)
        self.decoder = FSQPreNet(dims, dim, 3, 2 * (n_phones + 1), kernel=5)  # its output: CTC logits
        self.n_out = n_phones + 1
        self.mel_conv1 = nn.Conv1d(dims, 128, 3, padding=1)
        self.mel_conv2 = nn.Conv1d(128, 80, 3, padding=1)

    def forward(self, x: torch.Tensor):
        """(B, T, d) standardised features -> CTC log-probs (B, 2T, P + 1), mel (B, T, 80), ids (B, T),
        the pre-net's output z (B, T, D) and the bound penalty: the pre-net's outputs beyond +-2.5, where the FSQ tanh saturates. Without it they
        grow within a few dozen steps, every unit sits at a corner and no gradient comes back (seen here: the
        losses stalled at chance for 350 steps)."""
        z = self.tok.fsq(x)
        codes, ids = self.tok.quantiser(z)
        logp = self.decoder(codes).view(x.shape[0], -1, self.n_out).log_softmax(-1)
        mel = self.mel_conv2(F.gelu(self.mel_conv1(codes.transpose(1, 2)))).transpose(1, 2)
        return logp, mel, ids, (z.abs() - 2.5).clamp_min(0).square().mean(), z


def batches(lengths: list[int], max_frames: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.random())
    groups, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > max_frames:
            groups.append(cur)
            cur, longest = [], lengths[i]
        cur.append(i)
    if cur:
        groups.append(cur)
    rng.shuffle(groups)
    return groups


def collate(split: Split, idx: list[int], tok: WhisperUnitTokenizer, mel_stats):
    clips = [split.clip(i) for i in idx]
    x = nn.utils.rnn.pad_sequence([tok.standardise(c[0]) for c in clips], batch_first=True)
    mel = nn.utils.rnn.pad_sequence([(c[1] - mel_stats[0]) / mel_stats[1] for c in clips], batch_first=True)
    lens = torch.tensor([len(c[0]) for c in clips])
    tgt = torch.tensor([p for c in clips for p in c[2]])
    tlen = torch.tensor([len(c[2]) for c in clips])
    return x, mel, lens, tgt, tlen


@torch.no_grad()
def evaluate(model: Trainer, split: Split, max_items: int) -> dict:
    model.eval()
    errors: dict[str, list[int]] = {}
    used = torch.zeros(model.tok.cfg.num_units)
    pairs = torch.zeros(model.tok.cfg.num_units ** 2)
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(split.langs):
        by_lang.setdefault(lang, []).append(i)
    picked = [i for ids in by_lang.values() for i in ids[:: max(1, len(ids) // max_items)][:max_items]]
    for i in picked:
        x, _, phones = split.clip(i)
        logp, _, ids, _, _ = model(model.tok.standardise(x)[None])
        hyp = greedy(logp[0], 2 * len(x))
        e = errors.setdefault(split.langs[i], [0, 0])
        e[0] += edit_distance(hyp, phones)
        e[1] += len(phones)
        used += torch.bincount(ids[0], minlength=used.numel()).float()
        seq = ids[0]
        pairs += torch.bincount(seq[:-1] * len(used) + seq[1:], minlength=pairs.numel()).float()
    model.train()
    p = used / used.sum()
    nz = p[p > 0]
    joint = pairs.view(len(used), len(used))
    cond = joint / joint.sum(1, keepdim=True).clamp_min(1)
    seen = joint > 0
    next_bits = float(-(joint[seen] * cond[seen].log2()).sum() / joint.sum())
    return {"per": {lang: round(e[0] / max(1, e[1]), 4) for lang, e in errors.items()},
            "units_used": int((used > 0).sum()), "perplexity": round(float(torch.exp(-(nz * nz.log()).sum())), 1),
            "next_unit_bits": round(next_bits, 2), "repeats": round(float(joint.diagonal().sum() / joint.sum()), 3)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--levels", type=int, nargs="+", default=[8, 8, 8])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--mel-weight", type=float, default=1.0)
    ap.add_argument("--bound-weight", type=float, default=1.0)
    ap.add_argument("--smooth-weight", type=float, default=0.0)  # squared change of z from one unit to the next
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--max-frames", type=int, default=4000)
    ap.add_argument("--eval-items", type=int, default=150)  # per language
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--units-out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    meta = json.loads((args.features / "meta.json").read_text(encoding="utf-8"))
    manifest = Path(meta["manifest"])
    lang_of = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        lang_of[row["id"]] = row["lang"]
    splits = {name: Split(args.features / f"{name}.npz", args.layer, [lang_of[i] for i in ids])
              for name, ids in meta["ids"].items()}
    train = splits["train"]
    n_phones = len(meta["phones"])

    cfg, enc_state = whisper_encoder(TokenizerSection(output="", layer=args.layer, num_units=math.prod(args.levels)))
    tok = WhisperUnitTokenizer(cfg, args.levels, args.hidden, args.blocks)
    tok.load_state_dict({**tok.state_dict(), **enc_state}, strict=True)
    x = train.x.float()
    tok.mean.copy_(x.mean(0))
    tok.std.copy_(x.std(0).clamp_min(1e-5))
    mel_stats = (train.mel.float().mean(0), train.mel.float().std(0).clamp_min(1e-3))
    del x
    model = Trainer(tok, n_phones)
    params = [p for n, p in model.named_parameters() if not n.startswith("tok.encoder.")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ctc = nn.CTCLoss(zero_infinity=True)
    lengths = [int(train.off[i + 1] - train.off[i]) for i in range(len(train))]
    keep = [i for i in range(len(train)) if 2 * lengths[i] >= len(train.clip(i)[2]) > 0]
    budget = args.minutes * 60
    start, step, history, done = time.perf_counter(), 0, [], False
    while not done:
        for group in batches([lengths[i] for i in keep], args.max_frames, rng):
            idx = [keep[i] for i in group]
            xb, mel, lens, tgt, tlen = collate(train, idx, tok, mel_stats)
            logp, mel_hat, _, bound, z = model(xb)
            step_mask = (torch.arange(1, xb.shape[1])[None] < lens[:, None]).unsqueeze(-1)
            smooth = ((z[:, 1:] - z[:, :-1]).square() * step_mask).sum() / (step_mask.sum() * z.shape[-1])
            loss_ctc = ctc(logp.transpose(0, 1), tgt, 2 * lens, tlen)
            mask = (torch.arange(xb.shape[1])[None] < lens[:, None]).unsqueeze(-1)
            loss_mel = ((mel_hat - mel).abs() * mask).sum() / (mask.sum() * 80)
            loss = loss_ctc + args.mel_weight * loss_mel + args.bound_weight * bound + args.smooth_weight * smooth
            elapsed = time.perf_counter() - start
            progress = step / args.max_steps if args.max_steps else elapsed / budget
            for g in opt.param_groups:  # warm-up 100 steps, then cosine over the steps (or the time budget)
                g["lr"] = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 50 == 0:
                history.append({"step": step, "ctc": round(loss_ctc.item(), 4), "mel": round(loss_mel.item(), 4),
                                "minutes": round(elapsed / 60, 2)})
                print(history[-1], flush=True)
            if elapsed > budget or (args.max_steps and step >= args.max_steps):
                done = True
                break
    report = {"features": str(args.features), "layer": args.layer, "levels": args.levels, "steps": step,
              "weights": {"mel": args.mel_weight, "bound": args.bound_weight, "smooth": args.smooth_weight},
              "minutes": round((time.perf_counter() - start) / 60, 1), "threads": args.threads,
              "eval": {name: evaluate(model, s, args.eval_items) for name, s in splits.items()},
              "history": history}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if k.startswith("encoder.") else v).contiguous() for k, v in tok.unit_state().items()}
    save_file(state, str(args.out))
    if args.units_out is not None:
        with torch.no_grad():
            for name, s in splits.items():
                units = [tok.assign(tok.standardise(s.clip(i)[0])).numpy().astype(np.int32) for i in range(len(s))]
                write_units(args.units_out / name, meta["ids"][name], units)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
