"""Decoder stacks of the Qwen2 / Qwen2.5, Llama and Qwen3 families and the causal LM around them.

``Decoder`` is used three ways: the SpeechLM backbone (embedding + layers + final norm), the
TTS-Adapter (layers only, no embedding, no final norm) and the MLLM's LLM (with mRoPE). Inputs are
embeddings so callers can build them (the SpeechLM's 5-way mean, the MLLM's spliced media). The family
(``cfg.family``) only decides q/k/v biases and q/k norms; RoPE, norms and the SwiGLU MLP are shared.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.config import DecoderConfig
from mgm_omni.config.brain import load_llm_config
from mgm_omni.models.layers import DecoderLayer, RMSNorm, rope_cos_sin, rope_inv_freq

Mask = torch.Tensor | str | None


def attention_mask(
    t: int,
    cache_pos: int | torch.Tensor | None,
    kv_len: int,
    pad_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> Mask:
    """The mask SDPA needs: ``None`` (attend everything), ``"causal"``, or a bool (B|1, 1, T, kv_len).

    Args:
        cache_pos: ``None`` without a cache, an int start shared by the batch, or (B, T) per sequence.
        pad_mask: (B, kv_len) bool, True at real tokens; only without a cache.
    """
    if isinstance(cache_pos, torch.Tensor):
        slots = torch.arange(kv_len, device=device)
        return (slots <= cache_pos[:, :, None]).unsqueeze(1)  # (B, 1, T, kv_len)
    start = cache_pos or 0
    if pad_mask is None:
        if t == 1:
            return None
        if start == 0 and kv_len == t:
            return "causal"
    q_pos = torch.arange(start, start + t, device=device)
    mask = torch.arange(kv_len, device=device)[None, :] <= q_pos[:, None]  # (T, kv_len)
    if pad_mask is None:
        return mask[None, None]
    mask = mask[None] & pad_mask[:, None, :].bool()  # (B, T, kv_len)
    # A padded query row would have nothing to attend to (NaN); let it see itself.
    mask = mask | torch.eye(t, kv_len, dtype=torch.bool, device=device)[None]
    return mask.unsqueeze(1)


class Decoder(nn.Module):
    """A stack of decoder layers with optional token embedding and final norm."""

    def __init__(self, cfg: DecoderConfig, with_embedding: bool = True, with_norm: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size) if with_embedding else None
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if with_norm else None
        # A plain attribute, not a buffer: ``model.to(bfloat16)`` must not round the frequencies
        # (in bf16 the angles are off by radians past a few thousand positions).
        self.inv_freq = rope_inv_freq(cfg.dim_per_head, cfg.rope_theta)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(positions, self.inv_freq, self.cfg.mrope_section)

    def forward(
        self,
        h: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache=None,
        cache_pos: int | torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the layers on embeddings.

        Args:
            h: (B, T, H) input embeddings.
            positions: RoPE positions, (B, T) or (3, B, T) for mRoPE; default: the cache positions
                (or 0..T-1 without a cache).
            cache: a :class:`~mgm_omni.generation.kv_cache.KVCache` or ``None``.
            cache_pos: where the T new tokens go in the cache (int start or (B, T)).
            pad_mask: (B, T) bool, True at real tokens (uncached batches with padding).
            rope: precomputed (cos, sin) to share between stacks with the same positions.
        Returns:
            (B, T, H) hidden states (normed if the stack has a final norm).
        """
        b, t, _ = h.shape
        if cache is not None and cache_pos is None:
            raise ValueError("cache_pos is required with a cache")
        if cache is None and cache_pos is not None:
            raise ValueError("cache_pos given without a cache")
        if isinstance(cache_pos, torch.Tensor):
            kv_len = int(cache_pos.max()) + 1  # one host sync per forward, not per layer
        else:
            kv_len = (cache_pos or 0) + t
        if rope is None:
            if positions is None:
                if isinstance(cache_pos, torch.Tensor):
                    positions = cache_pos
                else:
                    positions = torch.arange(kv_len - t, kv_len, device=h.device).expand(b, t)
            rope = self.rope(positions)
        mask = attention_mask(t, cache_pos, kv_len, pad_mask, h.device)
        cos, sin = rope
        for layer in self.layers:
            h = layer(h, cos, sin, mask, cache, cache_pos, kv_len)
        return self.norm(h) if self.norm is not None else h


class CausalLM(nn.Module):
    """``model`` (a :class:`Decoder` with embedding and norm) plus ``lm_head``; Hugging Face names."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache=None,
        cache_pos: int | torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T, vocab) logits."""
        h = self.model(self.model.embed_tokens(input_ids), positions, cache, cache_pos, pad_mask)
        return self.lm_head(h)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> CausalLM:
        """A Hugging Face text-LLM directory (``model_type`` qwen2 / llama / qwen3: an official Qwen2.5 or
        Qwen3 release, or a GGUF file converted by :func:`mgm_omni.checkpoint.gguf.convert_gguf`)."""
        cfg = load_llm_config(path)
        model = cls(cfg)
        tied = [("lm_head.weight", "model.embed_tokens.weight")] if cfg.tie_word_embeddings else []
        load_into(model, load_state_dict(path), tied=tied)
        return model.to(device=device, dtype=dtype).eval()
