"""A guided-attention loss for SpeechLMs trained from scratch: a training aid, decoding is unchanged.

In the row layout (spec §2.1-2.3) a chunk's text ids take one row each from the chunk's first row, and its
speech units start P rows later at 4 per row; text runs ahead because it has fewer ids than the speech has
rows. To speak row r the model must find, by attention, the text ids being spoken at r. A large model
learns that alignment from hundreds of thousands of hours; a small one trained on a few hours barely does
(its teacher-forced loss hardly changes when the target is laid out with another item's text). The remedy
of attention-based TTS (guided attention, Tachibana et al. 2017) is a prior that speech and text advance
together: here, a few heads of one backbone layer are asked to put their attention on the text rows near
``n * (t + 0.5) / G`` (speech row t of G in a chunk of n text ids), a Gaussian band of width
``sigma * n`` rows (at least ``min_sigma``). The loss is ``-log`` of the attention mass in the band,
averaged over the query rows that predict units and the guided heads. Where the batch carries a forced
alignment (``align``: the text index of each unit row, :mod:`~mgm_omni.training.speechlm_align`), the band is
centred on the aligned text id instead, ``align_sigma`` ids wide. An alignment that also carries the phoneme
of every unit enables a second aid, ``phone_weight``: a linear head on the backbone state that predicts each
unit row (cross-entropy, :func:`phone_loss`) must also name the phonemes of its units, so the backbone learns
which sound its text makes now from a target that, unlike the units, does not change with the voice. The head
is training-only (the exported SpeechLM has no trace of it).

Chunks are found in the rows alone: a chunk starts after the prompt (the first labelled row) or after a
``<|audio_sep|>`` row, and ends at its close row (text pad, speech all eos), whose text id is the pad id
that ends the chunk's text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.models.speech_lm import IGNORE_INDEX, SpeechLM


@dataclass(frozen=True)
class GuideConfig:
    """``weight`` 0 turns the loss off; ``layer`` is a backbone layer index, ``heads`` its first heads."""

    weight: float = 0.0
    layer: int = 2
    heads: int = 2
    sigma: float = 0.15
    min_sigma: float = 2.0
    align_sigma: float = 1.0  # band width (text ids) around a forced alignment's text id
    phone_weight: float = 0.0  # auxiliary phoneme loss (needs aligned phonemes); 0: none
    phone_classes: int = 0  # phoneme ids of the alignment + 1 (recipes/speechlm_align.py prints it)

    def check(self, model: SpeechLM) -> None:
        n_layers, n_heads = model.cfg.num_hidden_layers, model.cfg.num_attention_heads
        attends = self.weight > 0  # the layer and heads matter only to the attention guide
        if self.weight < 0 or attends and (not 0 <= self.layer < n_layers or not 1 <= self.heads <= n_heads):
            raise ValueError(f"guide: weight >= 0, layer in [0, {n_layers}), heads in [1, {n_heads}] "
                             f"(got {self.weight}, {self.layer}, {self.heads})")
        if self.sigma <= 0 or self.min_sigma <= 0 or self.align_sigma <= 0:
            raise ValueError("guide: sigma, min_sigma and align_sigma must be > 0")
        if self.phone_weight < 0 or (self.phone_weight > 0 and self.phone_classes < 2):
            raise ValueError(f"guide: phone_weight >= 0, and phone_classes >= 2 with it (got {self.phone_weight}, "
                             f"{self.phone_classes})")

    @property
    def active(self) -> bool:
        return self.weight > 0 or self.phone_weight > 0


@dataclass(frozen=True)
class ChunkBand:
    """One chunk of one sequence: text rows ``[text_start, text_start + n)``, unit rows ``unit_rows``."""

    batch: int
    text_start: int
    n_text: int
    unit_rows: torch.Tensor  # (G,) row indices holding the chunk's units
    centre: torch.Tensor | None = None  # (G,) aligned text index per unit row; None: the linear band
    phones: torch.Tensor | None = None  # (G, k) aligned phoneme of each unit (-1: none)


def chunk_bands(rows: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, cfg: SpeechLMConfig,
                align: torch.Tensor | None = None, align_lengths: torch.Tensor | None = None) -> list[ChunkBand]:
    """The chunks of a padded batch of training sequences (rows / labels (B, T, 1 + k)) of a model ``cfg``
    (its ``<|audio_sep|>`` / ``<|audio_end|>`` ids end the text vocabulary, spec §1.2).

    ``align`` (B, U, 1 + k) with ``align_lengths`` (B,): per unit row of a sequence, its chunks in order, the
    aligned text index and the phonemes of its units (-1: none); a sequence whose count differs from its unit
    rows keeps the linear band."""
    audio_sep, audio_end, speech_codes = cfg.text_size - 1, cfg.text_size - 2, cfg.speech_eos
    out = []
    for b in range(rows.shape[0]):
        first = len(out)
        r = rows[b, : int(lengths[b])]
        labelled = (labels[b, : int(lengths[b])] != IGNORE_INDEX).any(-1).nonzero().flatten()
        if not len(labelled):
            continue
        seps = ((r[:, 0] == audio_sep) | (r[:, 0] == audio_end)).nonzero().flatten().tolist()
        start = int(labelled[0])
        for sep in (s for s in seps if s > start):
            close = sep - 1
            pad_text = int(r[close, 0])
            text = r[start:close, 0]
            ends = (text == pad_text).nonzero().flatten()
            n = int(ends[0]) if len(ends) else len(text)
            units = start + (r[start:close, 1] < speech_codes).nonzero().flatten()
            if n and len(units):
                out.append(ChunkBand(b, start, n, units))
            start = sep + 1
        if align is not None and int(align_lengths[b]) == sum(len(c.unit_rows) for c in out[first:]) > 0:
            at = 0
            for i in range(first, len(out)):
                g = len(out[i].unit_rows)
                rows_align = align[b, at: at + g]
                phones = rows_align[:, 1:] if bool((rows_align[:, 1:] >= 0).any()) else None
                centre = rows_align[:, 0].clamp(0, out[i].n_text - 1)
                out[i] = ChunkBand(b, out[i].text_start, out[i].n_text, out[i].unit_rows, centre, phones)
                at += g
    return out


def guide_loss(q: torch.Tensor, k: torch.Tensor, bands: list[ChunkBand], cfg: GuideConfig) -> torch.Tensor:
    """``-log`` band mass of the first ``cfg.heads`` heads, mean over guided queries and heads.

    ``q`` (B, H, T, D) and ``k`` (B, H_kv, T, D) are one layer's queries and keys after RoPE. The query of
    row ``u - 1`` predicts the units of row ``u``, so it is the one guided for unit row ``u``.
    """
    if not bands:
        return q.new_zeros(())
    group = q.shape[1] // k.shape[1]
    heads = torch.arange(cfg.heads, device=q.device)
    scale = q.shape[-1] ** -0.5
    total, count = q.new_zeros((), dtype=torch.float32), 0
    for band in bands:
        queries = band.unit_rows - 1
        g = len(queries)
        qs = q[band.batch, heads][:, queries].float()  # (h, G, D)
        ks = k[band.batch, heads // group, : int(queries.max()) + 1].float()  # (h, T', D)
        logits = torch.einsum("hgd,htd->hgt", qs, ks) * scale
        causal = torch.arange(ks.shape[1], device=q.device)[None] <= queries[:, None]  # (G, T')
        attn = logits.masked_fill(~causal, float("-inf")).softmax(-1)
        if band.centre is not None:
            centre, sigma = band.centre.float(), cfg.align_sigma
        else:  # text index being spoken if speech and text advance together
            centre = band.n_text * (torch.arange(g, device=q.device, dtype=torch.float32) + 0.5) / g
            sigma = max(cfg.min_sigma, cfg.sigma * band.n_text)
        j = torch.arange(band.n_text, device=q.device, dtype=torch.float32)
        weight = torch.exp(-0.5 * ((j[None] - centre[:, None]) / sigma) ** 2)  # (G, n)
        keys = band.text_start + torch.arange(band.n_text, device=q.device)
        visible = keys[None] <= queries[:, None]
        mass = (attn[:, :, keys.clamp_max(ks.shape[1] - 1)] * (weight * visible)[None]).sum(-1)  # (h, G)
        total = total - torch.log(mass + 1e-4).sum()
        count += mass.numel()
    return total / count


def phone_loss(h: torch.Tensor, bands: list[ChunkBand], head: torch.nn.Linear, k: int) -> torch.Tensor:
    """Cross-entropy of ``head`` (H -> k x classes) on the backbone states ``h`` (B, T, H) of the rows that
    predict each unit row, against the aligned phonemes of that row's units (-1 ignored); 0 without any."""
    feats, targets = [], []
    for band in bands:
        if band.phones is not None:
            feats.append(h[band.batch, band.unit_rows - 1])
            targets.append(band.phones)
    if not targets:
        return h.new_zeros((), dtype=torch.float32)
    logits = head(torch.cat(feats)).float().unflatten(-1, (k, -1))  # (N, k, classes)
    target = torch.cat(targets).long()  # a band has phones only where one is >= 0
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)
