"""The MLLM ("brain", official ``MGMOmniForCausalLM``): Qwen2.5-VL LLM + audio and vision towers (spec §4).

``MGMOmni.model`` is the text-only Qwen2.5-VL decoder (``embed_tokens``, ``layers`` with q/k/v biases, ``norm``,
3-D mRoPE) that also holds the multimodal parts under their official names:

* ``mm_speech_projector`` (information-mining projector, loaded from the MLLM checkpoint);
* ``speech_tower`` (a :class:`DualAudioTower`: ``speech_tower.speech_tower.*`` and
  ``speech_tower.speech_tower_aux.*``) and ``vision_tower`` (``vision_tower.vision_tower.*``), both frozen
  and loaded from their own repos, so they are attached after the checkpoint is read.

Placeholder splicing: ``<speech>`` (-500) and ``<image>`` (-200) in the prompt ids are replaced, in prompt
order, by the audio and visual feature sequences (spec §4.6); there are no marker tokens around audio.
The module holds no inference state: caches come from ``generation/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict, resolve_pretrained, stream_into
from mgm_omni.config import OmniConfig, load_config
from mgm_omni.models.omni_towers import load_audio_tower, load_vision_tower
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig
from mgm_omni.models.qwen import Decoder
from mgm_omni.models.vision import VisionConfig, VisionTower
from mgm_omni.text import IMAGE_TOKEN_INDEX, SPEECH_TOKEN_INDEX

# Keys of an official checkpoint that this module does not take from it: the towers come from their own
# repos, and ``mm_projector`` is built and saved upstream but never applied on the vision path (spec §4.5).
IGNORED_CHECKPOINT_PREFIXES = ("model.speech_tower.", "model.vision_tower.", "model.mm_projector.")
PLACEHOLDER_KIND = {SPEECH_TOKEN_INDEX: "audio", IMAGE_TOKEN_INDEX: "visual"}
PLACEHOLDER_NAME = {"audio": "<speech>", "visual": "<image>"}


class OmniInputError(ValueError):
    """Prompt ids and media inputs that do not fit together (placeholder counts, widths, id range)."""


@dataclass(frozen=True)
class Span:
    """Where one media input sits in the spliced sequence: ``kind`` ("audio" / "visual"), the token range
    ``[start, stop)`` and, for visual input, its patch grid ``(t, h, w)`` and spatial merge (for mRoPE)."""

    kind: str
    start: int
    stop: int
    grid_thw: tuple[int, int, int] | None = None
    merge_size: int = 2

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass
class MediaFeatures:
    """One media input encoded for splicing: (n, H) embeddings; for an image or video also its patch grid
    ``grid_thw`` (t, h, w) as the tower saw it, which gives n = t * (h / m) * (w / m) tokens."""

    kind: str
    embeddings: torch.Tensor
    grid_thw: tuple[int, int, int] | None = None
    merge_size: int = 2

    def __post_init__(self) -> None:
        if self.kind not in PLACEHOLDER_NAME:
            raise OmniInputError(f"media kind must be 'audio' or 'visual', got {self.kind!r}")
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] == 0:
            raise OmniInputError(f"{self.kind} features must be (n > 0, hidden), "
                                 f"got {tuple(self.embeddings.shape)}")
        if self.kind == "visual":
            if self.grid_thw is None or len(self.grid_thw) != 3:
                raise OmniInputError("visual features need their patch grid (t, h, w)")
            t, h, w = (int(v) for v in self.grid_thw)
            m = self.merge_size
            if h % m or w % m or t * (h // m) * (w // m) != self.embeddings.shape[0]:
                raise OmniInputError(f"visual grid {tuple(self.grid_thw)} (merge {m}) does not give the "
                                     f"{self.embeddings.shape[0]} tokens of the features")
            self.grid_thw = (t, h, w)


class VisionTowerWrapper(nn.Module):
    """``model.vision_tower``: holds the ViT as ``vision_tower`` (the official key nesting)."""

    def __init__(self, tower: VisionTower) -> None:
        super().__init__()
        self.vision_tower = tower

    @property
    def cfg(self) -> VisionConfig:
        return self.vision_tower.cfg

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Packed patches -> (N / m², H) tokens, item after item (see :class:`VisionTower`)."""
        return self.vision_tower(pixel_values, grid_thw)


class OmniBackbone(Decoder):
    """``model.*`` of the checkpoint: the Qwen2.5-VL decoder plus projector and (attached) towers."""

    def __init__(self, cfg: OmniConfig) -> None:
        super().__init__(cfg)
        self.mm_speech_projector = (DualMLPSpeechProjector(SpeechProjectorConfig.from_omni(cfg))
                                    if cfg.mm_speech_projector_type else None)
        self.speech_tower: nn.Module | None = None
        self.vision_tower: nn.Module | None = None


class MGMOmni(nn.Module):
    """``model`` (:class:`OmniBackbone`) + ``lm_head``; official parameter names.

    Args:
        cfg: the MLLM config (``model_type: "MGMOmni"``); ``rope_scaling.mrope_section`` selects mRoPE.
    """

    def __init__(self, cfg: OmniConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = OmniBackbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def attach_towers(self, speech_tower: nn.Module | None = None, vision_tower: nn.Module | None = None) -> None:
        """Set the frozen encoders (loaded from their own repos, spec §4.3, §4.5)."""
        if speech_tower is not None:
            self.model.speech_tower = speech_tower.requires_grad_(False)
        if vision_tower is not None:
            self.model.vision_tower = vision_tower.requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def splice(self, ids: Sequence[int] | torch.Tensor, media: Sequence[MediaFeatures] = ()
               ) -> tuple[torch.Tensor, list[Span]]:
        """Prompt ids with placeholders -> (1, T, H) input embeddings and where each media input went.

        The k-th ``<speech>`` (-500) takes the k-th audio input of ``media`` and the k-th ``<image>`` (-200)
        the k-th visual input (images and videos alike), as the official splicing does.

        Raises:
            OmniInputError: a placeholder without its input (or the reverse), an unknown negative id, an id
                outside the vocabulary, or features of the wrong width.
        """
        ids = torch.as_tensor(ids, dtype=torch.long).flatten().tolist()
        queues = {kind: [m for m in media if m.kind == kind] for kind in PLACEHOLDER_NAME}
        for kind, items in queues.items():
            wanted = sum(PLACEHOLDER_KIND.get(i) == kind for i in ids)
            if wanted != len(items):
                raise OmniInputError(f"the prompt has {wanted} {PLACEHOLDER_NAME[kind]} placeholder(s) but "
                                     f"{len(items)} {kind} input(s) were given")
        bad = [i for i in ids if (i < 0 and i not in PLACEHOLDER_KIND) or i >= self.cfg.vocab_size]
        if bad:
            raise OmniInputError(f"prompt id {bad[0]} is neither a placeholder (-500, -200) nor in the "
                                 f"vocabulary [0, {self.cfg.vocab_size})")
        width, embed = self.cfg.hidden_size, self.model.embed_tokens
        pieces: list[torch.Tensor] = []
        spans: list[Span] = []
        pos, text = 0, []
        for tok in ids + [None]:  # None flushes the last text run
            if tok is not None and tok >= 0:
                text.append(tok)
                continue
            if text:
                pieces.append(embed(torch.tensor(text, device=self.device)))  # (n_text, H)
                pos, text = pos + len(text), []
            if tok is None:
                break
            kind = PLACEHOLDER_KIND[tok]
            item = queues[kind].pop(0)
            if item.embeddings.shape[1] != width:
                raise OmniInputError(f"{kind} features have width {item.embeddings.shape[1]}, the LLM {width}")
            pieces.append(item.embeddings.to(self.device, self.dtype))
            spans.append(Span(kind, pos, pos + item.embeddings.shape[0], item.grid_thw, item.merge_size))
            pos += item.embeddings.shape[0]
        if not pieces:
            raise OmniInputError("the prompt is empty")
        return torch.cat(pieces)[None], spans  # (1, T, H)

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor | None = None, cache=None,
                cache_pos: int | torch.Tensor | None = None, last_only: bool = False,
                pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, H) input embeddings -> (B, T, vocab) logits (or (B, 1, vocab) with ``last_only``).

        Args:
            positions: (3, B, T) mRoPE positions (or (B, T) when all three axes agree); default: the
                cache positions, which is right only for text-only input. An LLM without mRoPE takes 3-D
                positions only when the three axes agree (text and audio; images need mRoPE).
            cache, cache_pos: a :class:`~mgm_omni.generation.kv_cache.KVCache` and where to write.
            pad_mask: (B, T) bool, True at real tokens (padded batches without a cache).
        """
        if positions is not None and positions.dim() == 2 and self.cfg.mrope_section is not None:
            positions = positions[None].expand(3, -1, -1)
        elif positions is not None and positions.dim() == 3 and self.cfg.mrope_section is None:
            if not bool((positions == positions[:1]).all()):
                raise OmniInputError("this LLM has no mRoPE (rope_scaling.mrope_section): it cannot place images")
            positions = positions[0]
        h = self.model(embeds, positions, cache, cache_pos, pad_mask)
        return self.lm_head(h[:, -1:] if last_only else h)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu",
                        towers: Sequence[str] = ("audio", "vision")) -> MGMOmni:
        """An official-format MLLM directory (or cached hub repo) with the named towers attached.

        The LLM and ``mm_speech_projector`` come from the checkpoint; tower copies and ``mm_projector`` in it
        are ignored. Each tower comes from the repo its config field names (``mm_speech_tower`` with
        ``Dual-`` removed, ``speech_tower_aux``, ``mm_vision_tower``); a name that is a folder inside the
        model directory is used from there.
        """
        root = resolve_pretrained(path_or_repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"])
        cfg = load_config(root)
        if not isinstance(cfg, OmniConfig):
            raise CheckpointError(f"{root}: model_type {cfg.model_type!r} is not an MLLM ('MGMOmni')")
        # Built in ``dtype`` (no float32 copy first: a 0.5B brain peaked at 4.6 GB). The same values: the strict
        # load writes every parameter, rounded to ``dtype`` as a cast afterwards would, and the RoPE frequencies
        # are float32 whatever the default dtype.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype if dtype.is_floating_point else default)
        try:
            model = cls(cfg)
        finally:
            torch.set_default_dtype(default)
        model = model.to(dtype=dtype)
        tied = [("lm_head.weight", "model.embed_tokens.weight")] if cfg.tie_word_embeddings else []
        # one tensor at a time; the embedding table is mapped from the file: only the rows looked up stay resident
        stream_into(model, root, tied=tied, ignore_unexpected=IGNORED_CHECKPOINT_PREFIXES, map_embeddings=True)
        unknown = set(towers) - {"audio", "vision"}
        if unknown:
            raise ValueError(f"unknown tower(s) {sorted(unknown)}; expected 'audio' and/or 'vision'")
        if "audio" in towers and cfg.mm_speech_tower:
            model.attach_towers(speech_tower=load_audio_tower(cfg, root))
        if "vision" in towers and cfg.mm_vision_tower:
            model.attach_towers(vision_tower=VisionTowerWrapper(load_vision_tower(cfg, root)))
        return model.to(device=device, dtype=dtype).eval()

    @classmethod
    def from_llm(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 **brain_fields) -> MGMOmni:
        """A brain around a plain text LLM (a Hugging Face Qwen2.5 / Llama / Qwen3 directory, e.g. a converted
        GGUF): its decoder and ``lm_head`` loaded, no projector unless ``brain_fields`` ask for one (untrained
        then), no towers. ``brain_fields`` are further :class:`OmniConfig` fields."""
        from mgm_omni.config.brain import load_llm_config

        llm = load_llm_config(path)
        shared = {n: getattr(llm, n) for n in llm.field_names() if n not in ("model_type", "extra")}
        cfg = OmniConfig(**{**shared, "mm_speech_projector_type": None, "image_aspect_ratio": None,
                            **brain_fields})
        model = cls(cfg)
        tied = [("lm_head.weight", "model.embed_tokens.weight")] if cfg.tie_word_embeddings else []
        state = load_state_dict(path)
        missing = [k for k in model.state_dict() if k not in state and k.startswith("model.mm_speech_projector.")]
        load_into(model, {**state, **{k: model.state_dict()[k] for k in missing}}, tied=tied)
        return model.to(device=device, dtype=dtype).eval()
