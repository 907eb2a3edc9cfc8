"""A training batch for the MLLM: prompts with media placeholders and supervised replies, spliced and padded.

Each sample is (prompt ids with ``<speech>`` -500 / ``<image>`` -200 placeholders, the media features for them,
target ids). The target follows the prompt; each sample is spliced exactly as at inference
(:meth:`~mgm_omni.models.omni_lm.MGMOmni.splice`, mRoPE positions of spec §4.6), then the batch is right-padded.
Labels follow the Hugging Face convention (``labels[t]`` is the id at position t; the loss shifts by one) and
are ``IGNORE_INDEX`` on the prompt, on media tokens and on padding, so only the reply is learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mgm_omni.generation.mllm.runner import mrope_positions
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni, OmniInputError, Span

IGNORE_INDEX = -100


@dataclass
class MLLMSample:
    """One conversation to learn from: the prompt (placeholders as negative ids), its media, the reply ids."""

    prompt_ids: Sequence[int]
    target_ids: Sequence[int]
    media: Sequence[MediaFeatures] = field(default_factory=list)


@dataclass
class SplicedBatch:
    """Model inputs of a batch, all right-padded to the longest sample.

    Attributes:
        embeds: (B, T, H) input embeddings (zeros at padding).
        attention_mask: (B, T) bool, True at real tokens.
        positions: (3, B, T) mRoPE positions (``pad_position`` at padding, as Qwen2.5-VL fills them).
        labels: (B, T) target ids at reply positions, ``IGNORE_INDEX`` elsewhere.
        spans: per sample, where its media went.
        rope_deltas: per sample, the rope delta a continuation would decode with.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    spans: list[list[Span]]
    rope_deltas: list[int]

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(1).tolist()


def splice_batch(model: MGMOmni, samples: Sequence[MLLMSample], pad_position: int = 1,
                 max_length: int | None = None) -> SplicedBatch:
    """Splice and pad ``samples`` (see the module docstring); gradients flow into embeddings and media features.

    Raises:
        OmniInputError: an empty batch, an empty target, a target id outside the vocabulary (placeholders
            included), a sample longer than ``max_length``, or any splicing error of the prompt and its media.
    """
    if not samples:
        raise OmniInputError("the batch is empty")
    vocab = model.cfg.vocab_size
    pieces, position_rows, label_rows, spans, deltas = [], [], [], [], []
    for i, sample in enumerate(samples):
        target = [int(t) for t in sample.target_ids]
        if not target:
            raise OmniInputError(f"sample {i}: the target is empty: nothing to learn")
        bad = [t for t in target if not 0 <= t < vocab]
        if bad:
            raise OmniInputError(f"sample {i}: target id {bad[0]} is outside the vocabulary [0, {vocab})")
        try:
            embeds, sample_spans = model.splice(list(sample.prompt_ids) + target, sample.media)  # (1, T_i, H)
        except OmniInputError as exc:
            raise OmniInputError(f"sample {i}: {exc}") from None
        length = embeds.shape[1]
        if max_length is not None and length > max_length:
            raise OmniInputError(f"sample {i} has {length} tokens after splicing, more than max_length {max_length}")
        positions, delta = mrope_positions(sample_spans, length)  # (3, 1, T_i)
        labels = torch.full((length,), IGNORE_INDEX, dtype=torch.long)
        labels[length - len(target):] = torch.tensor(target)
        pieces.append(embeds[0])
        position_rows.append(positions[:, 0])
        label_rows.append(labels)
        spans.append(sample_spans)
        deltas.append(delta)
    b, t, h = len(samples), max(p.shape[0] for p in pieces), model.cfg.hidden_size
    device = pieces[0].device
    mask = torch.zeros(b, t, dtype=torch.bool, device=device)
    positions = torch.full((3, b, t), pad_position, dtype=torch.long, device=device)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long, device=device)
    rows = []
    for i, (emb, pos, lab) in enumerate(zip(pieces, position_rows, label_rows)):
        n = emb.shape[0]
        rows.append(torch.cat([emb, emb.new_zeros(t - n, h)]))  # keeps the autograd graph of the embeddings
        mask[i, :n] = True
        positions[:, i, :n] = pos.to(device)
        labels[i, :n] = lab.to(device)
    return SplicedBatch(torch.stack(rows), mask, positions, labels, spans, deltas)
