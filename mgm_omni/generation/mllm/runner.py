"""MLLM text generation: spliced prefill, KV-cached decode steps, sampling and streamed text (spec §4.6-4.7).

    mllm = MLLM.from_pretrained("path/to/MGM-Omni-7B")
    audio = mllm.encode_audio(wave_16k)                       # any length, bounded memory
    prompt = mllm.prompt([("user", mllm_user_content("Summarise.", speech=True))], [audio])
    for step in mllm.stream(prompt):                          # one decode step per item
        print(step.text, end="")

``prefill`` and ``decode_step`` are plain functions; :class:`MLLMRunner` owns the cache of one sequence and
the rope delta of its mRoPE positions (decode position on all three axes = cache index + rope_delta).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mgm_omni.checkpoint import resolve_pretrained
from mgm_omni.config import read_json
from mgm_omni.config.brain import BrainSpec
from mgm_omni.generation.mllm import positions as _positions
from mgm_omni.generation.kv_cache import KVCache, cache_for
from mgm_omni.generation.sampling import SamplingConfig, mark_seen, sample
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni, OmniInputError, Span
from mgm_omni.text import (
    DEFAULT_SYSTEM_PROMPT,
    IM_START,
    ChatTemplate,
    Tokenizer,
    mllm_prompt,
    tokenize_with_placeholders,
)

log = logging.getLogger(__name__)

# Qwen2.5 ids end at 151664; the SpeechLM (Qwen3) vocabulary has other tokens from 151665 on, so in omni
# mode the MLLM must never pick them (spec §2.7).
SHARED_TEXT_IDS = 151665


@dataclass(frozen=True)
class TextDecodeConfig:
    """Text-track settings (separate from the speech track's, spec §2.9 #7).

    Args:
        sampling: text sampling; temperature 0 = greedy. Official CLI 0.3, demo 0.2.
        max_new_tokens: stop after this many generated tokens (official: 4096).
        mask_from: ids >= this are never sampled (omni mode: 151665); ``None`` = no mask.
        seed: seed of the text sampling generator (``None``: torch's global generator).
    """

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.3))
    max_new_tokens: int = 4096
    mask_from: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.mask_from is not None and self.mask_from < 1:
            raise ValueError(f"mask_from must be >= 1, got {self.mask_from}")


@dataclass
class MLLMPrompt:
    """A spliced prompt ready to prefill: (1, T, H) embeddings, (3, 1, T) positions, rope delta, media spans."""

    embeds: torch.Tensor
    positions: torch.Tensor
    rope_delta: int = 0
    spans: list[Span] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.embeds.shape[1]


@dataclass(frozen=True)
class TextStep:
    """One MLLM decode step: the sampled id, the text it completes (may be "" mid-character), and whether
    generation ended with it (``finish_reason`` "eos" or "max_tokens"; an eos id is not part of the text)."""

    token: int
    text: str
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@torch.inference_mode()
def prefill(model: MGMOmni, prompt: MLLMPrompt, cache: KVCache) -> torch.Tensor:
    """Run the whole prompt into an empty cache; (vocab,) float32 logits of its last position."""
    return model(prompt.embeds, prompt.positions, cache, 0, last_only=True)[0, -1].float()


@torch.inference_mode()
def decode_step(model: MGMOmni, token: int, index: int, rope_delta: int, cache: KVCache) -> torch.Tensor:
    """Append ``token`` at cache ``index`` (mRoPE position ``index + rope_delta`` on all axes); next logits."""
    ids = torch.tensor([[token]], device=model.device)
    pos = torch.full((1, 1), index + rope_delta, dtype=torch.long, device=model.device)
    return model(model.model.embed_tokens(ids), pos, cache, index)[0, -1].float()


class MLLMRunner:
    """The KV cache and position of one sequence on ``model``."""

    def __init__(self, model: MGMOmni, initial_tokens: int = 256) -> None:
        self.model, self.initial_tokens = model, initial_tokens
        self.cache: KVCache | None = None
        self.length = 0
        self.rope_delta = 0

    def start(self, prompt: MLLMPrompt) -> torch.Tensor:
        """Prefill ``prompt``; (vocab,) logits of the first new token."""
        self.cache = cache_for(self.model.cfg, 1, prompt.length + self.initial_tokens, self.model.dtype,
                               self.model.device)
        self.length, self.rope_delta = prompt.length, prompt.rope_delta
        return prefill(self.model, prompt, self.cache)

    def step(self, token: int) -> torch.Tensor:
        """Append one token; (vocab,) logits of the next."""
        if self.cache is None:
            raise RuntimeError("step before start")
        logits = decode_step(self.model, token, self.length, self.rope_delta, self.cache)
        self.length += 1
        return logits

    def reset(self) -> None:
        self.cache, self.length, self.rope_delta = None, 0, 0


class TextDetokenizer:
    """Ids in, text pieces out: a piece is released only once its bytes form whole characters, so the
    pieces concatenate to ``tokenizer.decode(all ids)`` (multi-byte characters can span several ids)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids before this are fully emitted and no longer decoded
        self.read = 0  # ids[prefix:read] decode to text already emitted

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        done = self.tokenizer.decode(self.ids[self.prefix:self.read])
        full = self.tokenizer.decode(self.ids[self.prefix:])
        if len(full) > len(done) and not full.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return full[len(done):]
        return ""

    def flush(self) -> str:
        """Whatever is left (an unfinished character decodes to U+FFFD)."""
        done = self.tokenizer.decode(self.ids[self.prefix:self.read])
        full = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return full[len(done):]


def mrope_positions(spans: Sequence[Span], length: int) -> tuple[torch.Tensor, int]:
    """(3, 1, T) positions and rope delta of a spliced sequence of ``length`` tokens (spec §4.6)."""
    runs: list = []  # the sequence as positions.mrope_positions reads it: token runs and vision grids
    at, merge = 0, 2
    for span in spans:
        if span.start > at:
            runs.append(span.start - at)
        if span.kind == "visual":
            runs.append(span.grid_thw)
            merge = span.merge_size
        else:
            runs.append(span.length)  # audio tokens are sequential, like text
        at = span.stop
    if length > at:
        runs.append(length - at)
    positions, delta = _positions.mrope_positions(runs, merge)
    return positions[:, None], int(delta)


def text_stream(runner: MLLMRunner, prompt: MLLMPrompt, tokenizer, config: TextDecodeConfig,
                stop_ids: Sequence[int]) -> Iterator[TextStep]:
    """Prefill, then one sampled token per item until a stop id or ``max_new_tokens``.

    The decode step of a token runs when the next item is requested, so a consumer that stops early
    never pays for a step it does not use. The runner is reset at the end.
    """
    device = runner.model.device
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
    detok = TextDetokenizer(tokenizer)
    stops = set(stop_ids)
    try:
        logits = runner.start(prompt)
        seen = None
        if config.sampling.repetition_penalty != 1.0:  # generated ids only, as generating from embeddings does
            seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool, device=device)
        for n in range(1, config.max_new_tokens + 1):
            if config.mask_from is not None:
                logits = logits.clone()
                logits[config.mask_from:] = float("-inf")
            token = int(sample(logits[None], config.sampling, seen, generator)[0])
            if token in stops:
                yield TextStep(token, detok.flush(), "eos")
                return
            text = detok.push(token)
            if n == config.max_new_tokens:
                yield TextStep(token, text + detok.flush(), "max_tokens")
                return
            yield TextStep(token, text)
            if seen is not None:
                mark_seen(seen, torch.tensor([token], device=device))
            logits = runner.step(token)
    finally:
        runner.reset()


class MLLM:
    """An :class:`MGMOmni`, its tokenizer and text settings: prompts with media in, text out.

    Args:
        model: the MLLM (towers attached for the media it must read).
        tokenizer: Qwen2.5 tokenizer (``encode``/``decode``/``eos_token_id``).
        config: default text settings; ``stop_ids``: ids that end a reply (default: the tokenizer's eos).
        system_prompt: the system turn (``None`` omits it).
        vision_preprocess: image/video settings (a ``VisionPreprocessConfig``; default: Qwen2.5-VL's).
    """

    def __init__(self, model: MGMOmni, tokenizer, config: TextDecodeConfig | None = None,
                 stop_ids: Sequence[int] | None = None, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                 vision_preprocess=None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or TextDecodeConfig()
        self.stop_ids = tuple(stop_ids) if stop_ids is not None else (tokenizer.eos_token_id,)
        self.system_prompt = system_prompt
        self.vision_preprocess = vision_preprocess

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", towers: Sequence[str] = ("audio", "vision"),
                        config: TextDecodeConfig | None = None, temperature: float | None = None) -> MLLM:
        """Model (with the named towers), tokenizer and stop ids of an official-format MLLM directory (the
        tokenizer from the folder its :class:`~mgm_omni.config.brain.BrainSpec` names).

        Text sampling comes from ``config`` if given, else from ``generation_config.json`` (top-k, top-p,
        repetition penalty) with ``temperature`` (default 0.3, the official CLI value); the effective values
        are logged (spec §2.4).
        """
        root = resolve_pretrained(path_or_repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"])
        model = MGMOmni.from_pretrained(root, dtype=dtype, device=device, towers=towers)
        tokenizer = Tokenizer.from_dir(BrainSpec.of(root, model.cfg).tokenizer_dir)
        gen_cfg = read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
        eos = gen_cfg.get("eos_token_id")  # Qwen2.5-VL lists <|im_end|> and <|endoftext|>
        stops = [tokenizer.eos_token_id] + [int(e) for e in (eos if isinstance(eos, list) else [eos] if eos else [])]
        if config is None:
            sampling = SamplingConfig.from_generation_config(gen_cfg, 0.3 if temperature is None else temperature)
            config = TextDecodeConfig(sampling)
        log.info("MLLM %s: text sampling %s, stop ids %s", root, config.sampling, stops)
        return cls(model, tokenizer, config, list(dict.fromkeys(stops)),
                   vision_preprocess=_vision_settings(model, root))

    def encode_audio(self, wave: torch.Tensor, trim_padding: bool = False) -> MediaFeatures:
        """16 kHz mono samples (any length) -> audio tokens for one ``<speech>`` placeholder."""
        from mgm_omni.generation.mllm.long_audio import encode_long_audio

        backbone = self.model.model
        if backbone.speech_tower is None or backbone.mm_speech_projector is None:
            raise OmniInputError("this MLLM has no audio tower loaded: cannot read audio input")
        tokens = encode_long_audio(wave, backbone.speech_tower, backbone.mm_speech_projector,
                                   trim_padding=trim_padding)
        return MediaFeatures("audio", tokens.embeddings)

    def encode_visual(self, vision) -> list[MediaFeatures]:
        """A preprocessed :class:`~mgm_omni.generation.mllm.vision_inputs.VisionInput` -> one feature block per item."""
        tower = self.model.model.vision_tower
        if tower is None:
            if not self.model.cfg.mm_vision_tower:  # e.g. the default brain: it hears, it does not see
                raise OmniInputError("this MLLM has no vision tower (its config names none): it cannot read "
                                     "images or video; pass --model with a brain that has one")
            raise OmniInputError("this MLLM has no vision tower loaded: cannot read images or video")
        merge = tower.cfg.spatial_merge_size
        with torch.inference_mode():
            tokens = tower(vision.pixel_values.to(self.model.device, self.model.dtype), vision.grid_thw)
        sizes = vision.num_tokens(merge)
        return [MediaFeatures("visual", feats.clone(), tuple(grid), merge)
                for feats, grid in zip(tokens.split(sizes), vision.grid_thw.tolist())]

    def encode_image(self, source) -> MediaFeatures:
        """An image (path, bytes or PIL image) -> features for one ``<image>`` placeholder."""
        from mgm_omni.generation.mllm.vision_inputs import preprocess_image

        return self.encode_visual(preprocess_image(source, self.vision_preprocess))[0]

    def encode_video(self, source, with_audio: bool = True) -> tuple[MediaFeatures, MediaFeatures | None]:
        """A video -> its frame features (one ``<image>`` placeholder) and, when it has an audio track and
        ``with_audio``, that track's audio features (one ``<speech>`` placeholder; the official code ignores
        the track)."""
        from mgm_omni.generation.mllm.vision_inputs import preprocess_video, video_audio_track

        visual = self.encode_visual(preprocess_video(source, self.vision_preprocess))[0]
        wave = video_audio_track(source) if with_audio and self.model.model.speech_tower is not None else None
        return visual, (self.encode_audio(wave) if wave is not None and wave.numel() else None)

    def prompt_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        """Token ids of the chat prompt (open assistant turn), placeholders as negative ids.

        Only user turns can hold placeholders: an earlier reply that happens to contain the text ``<speech>``
        stays text. Turns are encoded one by one; each starts with the special ``<|im_start|>``, which the
        tokenizer never merges across, so the ids equal those of the whole prompt string.
        """
        mllm_prompt(messages, self.system_prompt)  # validates the history
        template, tok = ChatTemplate(self.system_prompt), self.tokenizer
        ids = tok.encode(template.render([], open_role=None))  # the system turn, if any
        for role, content in messages:
            turn = template.turn(role, content)
            ids += tokenize_with_placeholders(turn, tok) if role == "user" else tok.encode(turn)
        return ids + tok.encode(f"{IM_START}assistant\n")  # the open assistant turn

    def prompt(self, messages: Sequence[tuple[str, str]], media: Sequence[MediaFeatures] = ()) -> MLLMPrompt:
        """Render, tokenise and splice a conversation (placeholders in prompt order take ``media``)."""
        embeds, spans = self.model.splice(self.prompt_ids(messages), media)
        positions, delta = mrope_positions(spans, embeds.shape[1])
        return MLLMPrompt(embeds, positions.to(embeds.device), delta, spans)

    def stream(self, prompt: MLLMPrompt, config: TextDecodeConfig | None = None) -> Iterator[TextStep]:
        """Decode a reply step by step (see :func:`text_stream`)."""
        return text_stream(MLLMRunner(self.model), prompt, self.tokenizer, config or self.config, self.stop_ids)

    def generate(self, prompt: MLLMPrompt, config: TextDecodeConfig | None = None) -> tuple[str, list[int]]:
        """The whole reply: its text and its ids (the stop id excluded)."""
        text, ids = [], []
        for step in self.stream(prompt, config):
            text.append(step.text)
            if step.finish_reason != "eos":
                ids.append(step.token)
        return "".join(text), ids


def _vision_settings(model: MGMOmni, root):
    """Image/video settings for the loaded tower: its geometry, and min/max pixels from the tower repo's
    ``preprocessor_config.json`` when there is one (spec §4.5)."""
    tower = model.model.vision_tower
    if tower is None:
        return None
    from mgm_omni.models.omni_towers import tower_dir
    from mgm_omni.generation.mllm.vision_inputs import VisionPreprocessConfig

    c = tower.cfg
    extra = {}
    pre = tower_dir(model.cfg.mm_vision_tower, root) / "preprocessor_config.json"
    if pre.is_file():
        data = read_json(pre)
        extra = {k: int(data[k]) for k in ("min_pixels", "max_pixels") if k in data}
    return VisionPreprocessConfig(patch_size=c.patch_size, merge_size=c.spatial_merge_size,
                                  temporal_patch_size=c.temporal_patch_size, **extra)
