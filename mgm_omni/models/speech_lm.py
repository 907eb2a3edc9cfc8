"""The SpeechLM ("mouth", official ``MGMTTSForCausalLM``): rows of 1 text id + k speech ids -> speech logits.

Spec §1. A row ``(t, s_0 .. s_{k-1})`` is embedded as the mean of k + 1 rows of the single table
``model.embed_tokens`` (the text id and each slot's speech id shifted into that slot's vocabulary
block). The Qwen3 backbone ends with its final norm; the TTS-Adapter (more Qwen3 layers, no embedding,
no final norm, its own KV cache) reads that normed state and writes into the shared ``lm_head``, whose
rows ``[text_size, vocab)`` are the k speech heads. Text size, speech block size and k all come from
the config; k = 1 is the one-token-per-row baseline.

This module holds no inference state: caches are passed in, sampling lives in ``generation/``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.checkpoint import resolve_pretrained, stream_into
from mgm_omni.config import SpeechLMConfig, load_config
from mgm_omni.models.qwen import Decoder

IGNORE_INDEX = -100


class SpeechLM(nn.Module):
    """Qwen3 backbone + TTS-Adapter + shared ``lm_head`` (upstream parameter names).

    Args:
        cfg: the SpeechLM config (``model_type: "MGMTTS"``).
    """

    def __init__(self, cfg: SpeechLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg, with_embedding=True, with_norm=True)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # A config without tts_adapter_type has no adapter: the speech heads read the backbone state.
        self.tts_adapter = (
            Decoder(cfg.adapter_config(), with_embedding=False, with_norm=False)
            if cfg.tts_adapter_type is not None else None
        )
        k, size = cfg.speech_token_count, cfg.tokenizer_speech_size
        # Column c of a row is looked up at id + offsets[c]: 0 for text, text_size + size * i for slot i.
        offsets = torch.tensor([0] + [cfg.text_size + size * i for i in range(k)], dtype=torch.long)
        self.register_buffer("row_offsets", offsets, persistent=False)

    @property
    def num_slots(self) -> int:
        return self.cfg.speech_token_count

    @property
    def speech_head_weight(self) -> torch.Tensor:
        """(k * S, H): the ``lm_head`` rows of the speech blocks, a view (no copy)."""
        return self.lm_head.weight[self.cfg.text_size:]

    def embed_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, T, 1 + k) rows with relative speech ids -> (B, T, H) mean embeddings (spec §1.3)."""
        if rows.shape[-1] != self.num_slots + 1:
            raise ValueError(f"rows must have {self.num_slots + 1} columns (text + {self.num_slots} slots), "
                             f"got shape {tuple(rows.shape)}")
        e = self.model.embed_tokens(rows + self.row_offsets)  # (B, T, 1 + k, H)
        return e.sum(dim=2) / (self.num_slots + 1)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for (B, T) positions; backbone and adapter share theta and head_dim, hence the table."""
        return self.model.rope(positions)

    def forward(
        self,
        rows: torch.Tensor,
        caches: tuple | None = None,
        cache_pos: int | torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone and adapter states of a run of rows.

        Args:
            rows: (B, T, 1 + k) int64, relative speech ids.
            caches: ``(backbone_cache, adapter_cache)`` or ``None`` (uncached forward).
            cache_pos: int start shared by the batch, or (B, T) per-sequence positions; with caches only.
            pad_mask: (B, T) bool, True at real rows (uncached padded batches).
            positions: (B, T) RoPE positions; default: the cache positions (0..T-1 without a cache).
        Returns:
            ``h`` (B, T, H), the normed backbone state (text logits come from it), and ``g`` (B, T, H),
            the adapter output (speech logits come from it).
        """
        b, t, _ = rows.shape
        if positions is None:
            if isinstance(cache_pos, torch.Tensor):
                positions = cache_pos
            else:
                start = cache_pos or 0
                positions = torch.arange(start, start + t, device=rows.device).expand(b, t)
        rope = self.rope(positions)
        llm_cache, adapter_cache = caches if caches is not None else (None, None)
        h = self.model(self.embed_rows(rows), cache=llm_cache, cache_pos=cache_pos, pad_mask=pad_mask, rope=rope)
        if self.tts_adapter is None:
            return h, h
        g = self.tts_adapter(h, cache=adapter_cache, cache_pos=cache_pos, pad_mask=pad_mask, rope=rope)
        return h, g

    def speech_logits(self, g: torch.Tensor) -> torch.Tensor:
        """(..., H) adapter states -> (..., k, S) speech logits; only the speech rows of ``lm_head``."""
        logits = F.linear(g, self.speech_head_weight)  # (..., k * S)
        return logits.unflatten(-1, (self.num_slots, self.cfg.tokenizer_speech_size))

    def text_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., H) backbone states -> (..., text_size) text logits (training only)."""
        return F.linear(h, self.lm_head.weight[: self.cfg.text_size])

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> SpeechLM:
        """Config and weights of an official-format SpeechLM directory (or a cached hub repo).

        The tokenizer is loaded separately (``mgm_omni.text.Tokenizer.from_dir``); see
        ``mgm_omni.generation.speech.generator.load_speech_generator`` for both at once.
        """
        root = resolve_pretrained(path_or_repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"])
        cfg = load_config(root)
        if not isinstance(cfg, SpeechLMConfig):
            raise ValueError(f"{root}: model_type {cfg.model_type!r} is not a SpeechLM ('MGMTTS')")
        model = cls(cfg)
        stream_into(model, root, tied=[("lm_head.weight", "model.embed_tokens.weight")], map_embeddings=True)
        return model.to(device=device, dtype=dtype).eval()


def speech_lm_loss(
    text_logits: torch.Tensor, speech_logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official training loss (spec §1.6): ``CE_text + CE_speech``, each with a one-row shift.

    Args:
        text_logits: (B, T, text_size).
        speech_logits: (B, T, k, S).
        labels: (B, T, 1 + k), column 0 text ids, columns 1.. relative speech ids; -100 = ignore.
    Returns:
        ``(loss, loss_text, loss_speech)``; ``loss_speech`` is 0 if every speech label is ignored.
    """
    text_logits = text_logits[:, :-1].float()
    speech_logits = speech_logits[:, :-1].float()
    text_labels = labels[:, 1:, 0]
    speech_labels = labels[:, 1:, 1:]
    loss_text = F.cross_entropy(text_logits.flatten(0, 1), text_labels.flatten(), ignore_index=IGNORE_INDEX)
    if (speech_labels != IGNORE_INDEX).any():
        loss_speech = F.cross_entropy(speech_logits.flatten(0, 2), speech_labels.flatten(), ignore_index=IGNORE_INDEX)
    else:
        loss_speech = speech_logits.sum() * 0.0
    return loss_text + loss_speech, loss_text, loss_speech


def random_speech_lm(cfg: SpeechLMConfig, seed: int = 0, dtype: torch.dtype = torch.float32,
                     norm_jitter: float = 0.2, embed_std: float = 0.5) -> SpeechLM:
    """A SpeechLM with deterministic random weights (tests and benchmarks).

    Norm gains are ``1 + norm_jitter * N(0, 1)`` so a skipped or swapped tensor shows up in parity tests;
    linear layers are N(0, 1/fan_in) so activations keep their scale through the stack.
    """
    gen = torch.Generator().manual_seed(seed)
    model = SpeechLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + norm_jitter * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(embed_std * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model.to(dtype).eval()

