"""Sampling of speech ids: repetition penalty, temperature, top-k, top-p; greedy at temperature 0.

The processors run in the Hugging Face order (repetition penalty, then temperature, top-k, top-p), so
settings read from a checkpoint's ``generation_config.json`` mean what they mean upstream (spec §2.4).
Every slot of every sequence is one row of a (N, S) logits matrix; the repetition penalty of a slot
sees only that slot's own history (a (N, S) bool "seen" mask kept by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class SamplingError(ValueError):
    """A sampling setting is out of range."""


@dataclass(frozen=True)
class SamplingConfig:
    """Speech-track sampling settings (kept separate from any text-track settings, spec §2.9 #7).

    Args:
        temperature: 0 means greedy (argmax); the official CLI uses 0.3, the demo and eval drivers 0.2.
        top_k: keep the k most likely ids (0 disables). Hugging Face default 50.
        top_p: nucleus mass to keep (1.0 disables).
        repetition_penalty: > 1 makes ids already generated in the same slot less likely (1.0 disables).
    """

    temperature: float = 0.3
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
            raise SamplingError(f"temperature must be >= 0, got {self.temperature!r}")
        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise SamplingError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not self.repetition_penalty > 0:
            raise SamplingError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_generation_config(cls, data: dict, temperature: float | None = None) -> SamplingConfig:
        """Settings from a parsed ``generation_config.json`` (missing keys: Hugging Face defaults)."""
        t = data.get("temperature", 1.0) if temperature is None else temperature
        if data.get("do_sample") is False and temperature is None:
            t = 0.0
        return cls(temperature=float(t), top_k=int(data.get("top_k", 50)), top_p=float(data.get("top_p", 1.0)),
                   repetition_penalty=float(data.get("repetition_penalty", 1.0)))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """(N, S) logits; ids marked in ``seen`` (N, S) are divided by ``penalty`` if positive, else multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def warp(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, top-k and top-p on (N, S) float logits; removed ids get -inf."""
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - cfg.top_p
        drop[..., -1] = False  # always keep the most likely id
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    cfg: SamplingConfig,
    seen: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one id per row of (N, S) logits (float32 recommended).

    Args:
        seen: (N, S) bool, ids already generated in that row's slot (repetition penalty only).
        generator: random source for multinomial sampling (ignored when greedy).
    Returns:
        (N,) int64 ids, on the logits' device.
    """
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    if cfg.greedy:
        return logits.argmax(dim=-1)
    probs = warp(logits.float(), cfg).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def mark_seen(seen: torch.Tensor, ids: torch.Tensor) -> None:
    """Record (N,) generated ids in the (N, S) ``seen`` mask, in place."""
    seen.scatter_(1, ids.view(-1, 1), True)
