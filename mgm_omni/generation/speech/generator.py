"""Public TTS surface of the SpeechLM: text + reference voice -> rows, ``tts_error`` + cause, vocoder tokens.

    gen = SpeechGenerator.from_pretrained("path/to/MGM-Omni-TTS-2B-0927")
    req = SpeechRequest("Hello there.", reference_text="...", reference_tokens=s3_codes)
    out = gen.generate(req)                      # SpeechResult: rows, tokens, tts_error, cause, ...
    for item in gen.stream([req, other]):        # rows as they are decoded, with the tokens they release
        vocoder.push(item.event.request, item.tokens)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from mgm_omni.checkpoint import CheckpointError, resolve_pretrained
from mgm_omni.config import SpeechLMConfig, read_json
from mgm_omni.generation.speech.chunk_state import TokenText
from mgm_omni.generation.speech.chunked_decode import (
    ChunkedDecoder,
    DecodeConfig,
    RetryPolicy,
    RowEvent,
    SpeechResult,
    generate_with_retry,
)
from mgm_omni.generation.speech.cpu_linear import pack_linears, packing_available, quantize_int8
from mgm_omni.generation.speech.native_build import NativeUnavailable
from mgm_omni.generation.speech.native_build import available as native_available
from mgm_omni.generation.speech.native_step import NativeStep
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds, tts_prompt_rows
from mgm_omni.generation.speech.runner import SpeechLMRunner, speech_head
from mgm_omni.generation.speech.token_stream import VocoderTokenStream, official_vocoder_tokens, vocoder_tokens
from mgm_omni.models.speech_lm import SpeechLM
from mgm_omni.text import Tokenizer, TTSPromptConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechRequest:
    """One text to speak in the voice of a reference clip (its transcript and its S3 tokens, 25 Hz)."""

    text: str
    reference_text: str
    reference_tokens: Sequence[int]


@dataclass(frozen=True)
class StreamedRow:
    """A decoded row and the vocoder tokens it releases for its request (often 0 or k)."""

    event: RowEvent
    tokens: list[int]


def native_step_for(model: SpeechLM, native: bool | str | None) -> NativeStep | None:
    """The native decode step the ``native`` setting asks for (see :class:`SpeechGenerator`)."""
    if native is False:
        return None
    if native is None:
        if model.lm_head.weight.device.type != "cpu" or not native_available():
            return None
        try:
            return NativeStep(model)
        except NativeUnavailable as exc:
            log.info("native decode step unavailable: %s", exc)
            return None
    return NativeStep(model, None if native is True else native)


class SpeechGenerator:
    """A SpeechLM, its tokenizer and decode settings.

    Args:
        model: the SpeechLM (eval mode; its dtype and device are used).
        tokenizer: anything with ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
            ``pad_token_id`` and ``eos_token_id`` (e.g. :class:`mgm_omni.text.Tokenizer`).
        config: default decode settings.
        prompt_config: instruction strings of the TTS prompt.
        pack: compute with oneDNN-packed weights (``cpu_linear``): much faster one-row steps on CPU in
            bfloat16. ``None`` = on for a bfloat16 CPU model when the native step is not used. Packing
            swaps the model's linear layers in place (inference only from then on).
        native: run decode steps with the native CPU step (``native_step``): ``None`` = when it is
            available (a CPU model and a C compiler; else the PyTorch step, logged), ``False`` = never,
            ``True`` or a weight format (``"fp32"``, ``"bf16"``, ``"int8"``) = required.
    """

    def __init__(self, model: SpeechLM, tokenizer, config: DecodeConfig | None = None,
                 prompt_config: TTSPromptConfig | None = None, pack: bool | None = None,
                 native: bool | str | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.cfg: SpeechLMConfig = model.cfg
        self.config = config or DecodeConfig()
        self.prompt_config = prompt_config
        self.ids = SpecialIds.from_tokenizer(tokenizer, self.cfg)
        self.token_text = TokenText(tokenizer)
        weight = model.lm_head.weight
        self.native = native_step_for(model, native)
        if pack is None:
            pack = self.native is None and packing_available(weight) and weight.dtype == torch.bfloat16
        self.packed = pack
        if self.packed:
            pack_linears(model, skip=("lm_head",))
        self.head = speech_head(model, self.packed)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", config: DecodeConfig | None = None,
                        temperature: float | None = None, pack: bool | None = None,
                        quantize: str | None = None, native: bool | str | None = None) -> SpeechGenerator:
        """Model, tokenizer and sampling settings of an official-format SpeechLM directory.

        Sampling comes from ``config`` if given, else from ``generation_config.json`` (top-k, top-p,
        repetition penalty) with ``temperature`` (default 0.3, the official CLI value); the effective
        values are logged (spec §2.4). ``pack``, ``native``: see the class. ``quantize="int8"`` decodes with
        int8 weights (a CPU speed mode): through the native step where it builds (the model keeps
        ``dtype`` for the prefill), else through PyTorch's dynamic int8 layers on a float32 model.
        """
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize:
            native = "int8" if native is not False and torch.device(device).type == "cpu" and native_available() else False
            if native is False:
                dtype, pack = torch.float32, False
        root = resolve_pretrained(path_or_repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt"])
        model = SpeechLM.from_pretrained(root, dtype=dtype, device=device)
        tokenizer = Tokenizer.from_dir(root)
        if len(tokenizer) != model.cfg.vocab_size:
            raise CheckpointError(f"{root}: tokenizer has {len(tokenizer)} entries but vocab_size is "
                                  f"{model.cfg.vocab_size}")
        if config is None:
            gen_cfg = read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
            sampling = SamplingConfig.from_generation_config(gen_cfg, 0.3 if temperature is None else temperature)
            config = DecodeConfig(sampling=sampling)
        if quantize and native is False:
            for stack in (model.model, model.tts_adapter):
                if stack is not None:
                    quantize_int8(stack)
        log.info("SpeechLM %s: sampling %s, delay rows %d", root, config.sampling, model.cfg.delay_rows)
        return cls(model, tokenizer, config, pack=pack, native=native)

    def prompt(self, request: SpeechRequest) -> PromptRows:
        """The prefill rows and text buffer of a request (raises ``SpeechPromptError`` on bad input)."""
        return tts_prompt_rows(self.tokenizer, self.cfg, request.text, request.reference_text,
                               request.reference_tokens, self.prompt_config)

    def runner(self, runner_class: type[SpeechLMRunner] = SpeechLMRunner, *args, **kwargs) -> SpeechLMRunner:
        """A fresh runner (caches) on this generator's model, head and native step."""
        return runner_class(self.model, *args, head=self.head, native=self.native, **kwargs)

    def decoder(self) -> ChunkedDecoder:
        """A fresh engine (its own runner and caches) on this generator's model."""
        return ChunkedDecoder(self.runner(), self.ids, self.token_text, self.config)

    def stream(self, requests: SpeechRequest | Sequence[SpeechRequest],
               config: DecodeConfig | None = None) -> Iterator[StreamedRow]:
        """Decode requests together; yield every row as soon as it exists with the tokens it releases."""
        requests = [requests] if isinstance(requests, SpeechRequest) else list(requests)
        prompts = [self.prompt(r) for r in requests]
        streams = [VocoderTokenStream(self.ids, self.cfg.delay_rows) for _ in requests]
        for event in self.decoder().stream(prompts, config):
            tokens = streams[event.request].push(event.row)
            if event.finish_reason is not None:
                tokens += streams[event.request].finish()
            yield StreamedRow(event, tokens)

    def generate(self, requests: SpeechRequest | Sequence[SpeechRequest],
                 config: DecodeConfig | None = None) -> SpeechResult | list[SpeechResult]:
        """Decode to completion. One request gives one result; a list gives a list (decoded as a batch)."""
        single = isinstance(requests, SpeechRequest)
        prompts = [self.prompt(r) for r in ([requests] if single else requests)]
        results = self.decoder().generate(prompts, config)
        for res in results:
            res.tokens = self.vocoder_tokens(res.rows)
        return results[0] if single else results

    def generate_with_retry(self, request: SpeechRequest, policy: RetryPolicy | None = None,
                            config: DecodeConfig | None = None) -> SpeechResult:
        """Decode one request, retrying with rising temperature while a chunk aborts (bounded)."""
        result = generate_with_retry(self.decoder(), self.prompt(request), policy or RetryPolicy(), config)
        result.tokens = self.vocoder_tokens(result.rows)
        return result

    def vocoder_tokens(self, rows, official_compat: bool = False) -> list[int]:
        """The 25 Hz stream for the vocoder: drop exactly P delay rows per chunk (P = the config's
        ``speech_token_pre_pad``, else 4). ``official_compat`` applies the official ``token2audio`` rule
        instead (P = the config value, else 1) for comparison with official outputs only."""
        if official_compat:
            pre_pad = self.cfg.speech_token_pre_pad if self.cfg.speech_token_pre_pad is not None else 1
            return official_vocoder_tokens(rows, self.ids, pre_pad)
        return vocoder_tokens(rows, self.ids, self.cfg.delay_rows)

    def with_config(self, **changes) -> SpeechGenerator:
        """A generator sharing model and tokenizer with some ``DecodeConfig`` fields changed."""
        clone = SpeechGenerator.__new__(SpeechGenerator)
        clone.__dict__.update(self.__dict__)  # same model, tokenizer, packed head and token-text cache
        clone.config = replace(self.config, **changes)
        return clone
