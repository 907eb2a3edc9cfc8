"""Public TTS surface of the SpeechLM: text + reference voice -> rows, ``tts_error`` + cause, vocoder tokens.

    gen = SpeechGenerator.from_pretrained("path/to/MGM-Omni-TTS-2B-0927")
    req = SpeechRequest("Hello there.", reference_text="...", reference_tokens=s3_codes)
    out = gen.generate(req)                      # SpeechResult: rows, tokens, tts_error, cause, ...
    for item in gen.stream([req, other]):        # rows as they are decoded, with the tokens they release
        vocoder.push(item.event.request, item.tokens)
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mgm_omni.checkpoint import CheckpointError
from mgm_omni.config import SpeechLMConfig, read_json
from mgm_omni.config.mouth import MouthSpec
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
from mgm_omni.generation.speech.step_choice import step_for_cpu
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.layout import ChunkRules, RowLayout
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds, tts_prompt_rows
from mgm_omni.generation.speech.runner import SpeechLMRunner, speech_head
from mgm_omni.generation.speech.token_stream import VocoderTokenStream, official_vocoder_tokens, vocoder_tokens
from mgm_omni.models.speech_lm import SpeechLM
from mgm_omni.text import TTSPromptConfig, as_frontend, load_text_frontend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechRequest:
    """One text to speak in the voice of a reference clip (its transcript and its speech tokens)."""

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
    """A SpeechLM, its text front-end, its mouth spec and decode settings.

    Args:
        model: the SpeechLM (eval mode; its dtype and device are used). Never modified: packed or
            quantised decode weights live in a separate module tree (``decode_model``) that shares the
            model's other tensors, so training code may hold the same model.
        tokenizer: the text front-end (:class:`~mgm_omni.text.TextFrontEnd`), or a bare tokenizer with
            ``encode``, ``decode``, ``pad_token_id`` and ``eos_token_id`` (read as the Qwen BPE front-end).
        config: default decode settings.
        prompt_config: instruction strings of the TTS prompt.
        pack: compute with oneDNN-packed weights (``cpu_linear``): much faster one-row steps on CPU in
            bfloat16. ``None`` = on for a bfloat16 CPU model when the native step is not used.
        native: run decode steps with the native CPU step (``native_step``): ``None`` = when it is
            available (a CPU model and a C compiler; else the PyTorch step, logged), ``False`` = never,
            ``True`` or a weight format (``"fp32"``, ``"bf16"``, ``"int8"``) = required.
        mouth: what the mouth is (delay rows, silence and blank codes, ...); default: the release's values
            for this model's config.
    """

    def __init__(self, model: SpeechLM, tokenizer, config: DecodeConfig | None = None,
                 prompt_config: TTSPromptConfig | None = None, pack: bool | None = None,
                 native: bool | str | None = None, mouth: MouthSpec | None = None,
                 decode_model: SpeechLM | None = None) -> None:
        self.text = as_frontend(tokenizer)
        self.model, self.tokenizer = model, getattr(self.text, "tokenizer", tokenizer)  # the bare tokenizer
        self.cfg: SpeechLMConfig = model.cfg
        self.mouth = mouth or MouthSpec.from_dict({}, MouthSpec.defaults_for(model.cfg))
        if (self.mouth.slots, self.mouth.speech_codes) != (self.cfg.speech_token_count, self.cfg.speech_eos):
            raise CheckpointError(f"the mouth declares k={self.mouth.slots} and {self.mouth.speech_codes} codes, the "
                                  f"model has k={self.cfg.speech_token_count} and {self.cfg.speech_eos}")
        self.config = config or DecodeConfig()
        self.prompt_config = prompt_config
        self.ids = SpecialIds.from_tokenizer(self.text, self.cfg)
        self.layout = RowLayout(self.ids, self.cfg.speech_token_count, self.mouth.delay_rows)
        self.rules = ChunkRules.for_mouth(self.mouth)
        self.decode_model = decode_model or model
        weight = model.lm_head.weight
        if native is None and pack is None and weight.device.type == "cpu":  # the fastest exact step here
            self.native, pack = step_for_cpu(model)  # (step_choice: measured once per CPU and shape; -v logs it)
        else:
            self.native = native_step_for(model, native)
        if pack is None:
            pack = self.native is None and packing_available(weight) and weight.dtype == torch.bfloat16
        self.packed = pack
        if self.packed:
            self.decode_model = packed_copy(self.decode_model)
        self.head = speech_head(model, self.packed)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", config: DecodeConfig | None = None,
                        temperature: float | None = None, pack: bool | None = None,
                        quantize: str | None = None, native: bool | str | None = None) -> SpeechGenerator:
        """Model, text front-end, mouth spec and sampling settings of a mouth directory.

        ``path`` is a local directory (hub ids and built-in names are resolved before, by
        ``mgm_omni.hub.resolve_mouth``); the pipeline passes the mouth's dtype (``MouthSpec.dtype``).
        Sampling comes from ``config`` if given, else from ``generation_config.json`` (top-k, top-p,
        repetition penalty) with ``temperature`` (default 0.3, the official CLI value); the effective
        values are logged (spec §2.4). ``pack``, ``native``: see the class. ``quantize="int8"`` decodes with
        int8 weights (a CPU speed mode): through the native step where it builds (the model keeps
        ``dtype`` for the prefill), else through PyTorch's dynamic int8 layers on a float32 copy.
        """
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        root = Path(path)
        if not (root / "config.json").is_file():
            raise CheckpointError(f"{root}: not a model directory (no config.json); resolve hub ids and built-in "
                                  "names first (mgm_omni.hub.resolve_mouth)")
        mouth = MouthSpec.from_dir(root)
        if quantize:
            native = "int8" if native is not False and torch.device(device).type == "cpu" and native_available() else False
            if native is False:
                dtype, pack = torch.float32, False
        model = SpeechLM.from_pretrained(root, dtype=dtype, device=device)
        text = load_text_frontend(root, mouth.text_frontend, mouth.tokenizer_dir, mouth.g2p)
        if len(text) not in (model.cfg.vocab_size, model.cfg.text_size):  # speech entries or text alone
            raise CheckpointError(f"{root}: tokenizer has {len(text)} entries but the model has "
                                  f"{model.cfg.text_size} text ids ({model.cfg.vocab_size} with speech)")
        if config is None:
            gen_cfg = read_json(root / "generation_config.json") if (root / "generation_config.json").is_file() else {}
            sampling = SamplingConfig.from_generation_config(gen_cfg, 0.3 if temperature is None else temperature)
            config = DecodeConfig(sampling=sampling)
        decode_model = None
        if quantize and native is False:
            decode_model = shadow_copy(model)
            for stack in (decode_model.model, decode_model.tts_adapter):
                if stack is not None:
                    quantize_int8(stack)
        log.info("SpeechLM %s: sampling %s, delay rows %d", root, config.sampling, mouth.delay_rows)
        return cls(model, text, config, pack=pack, native=native, mouth=mouth, decode_model=decode_model)

    def prompt(self, request: SpeechRequest) -> PromptRows:
        """The prefill rows and text buffer of a request (raises ``SpeechPromptError`` on bad input)."""
        return tts_prompt_rows(self.text, self.cfg, request.text, request.reference_text,
                               request.reference_tokens, self.prompt_config, self.mouth.delay_rows)

    def runner(self, runner_class: type[SpeechLMRunner] = SpeechLMRunner, *args, **kwargs) -> SpeechLMRunner:
        """A fresh runner (caches) on this generator's decode model, head and native step."""
        return runner_class(self.decode_model, *args, head=self.head, native=self.native, **kwargs)

    def decoder(self, runner: SpeechLMRunner | None = None) -> ChunkedDecoder:
        """A fresh engine on ``runner`` (default: a fresh runner of its own) with this mouth's rules."""
        return ChunkedDecoder(runner or self.runner(), self.ids, self.text, self.config, self.rules)

    def token_stream(self, strict: bool = False) -> VocoderTokenStream:
        """A fresh row -> vocoder token extraction for this mouth (P delay rows, its silence code)."""
        return VocoderTokenStream(self.ids, self.mouth.delay_rows, strict, self.mouth.silence_code)

    def stream(self, requests: SpeechRequest | Sequence[SpeechRequest],
               config: DecodeConfig | None = None) -> Iterator[StreamedRow]:
        """Decode requests together; yield every row as soon as it exists with the tokens it releases."""
        requests = [requests] if isinstance(requests, SpeechRequest) else list(requests)
        prompts = [self.prompt(r) for r in requests]
        streams = [self.token_stream() for _ in requests]
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
        """The token stream for the vocoder: drop exactly P delay rows per chunk (``MouthSpec.delay_rows``).
        ``official_compat`` applies the official ``token2audio`` rule instead (P = the config value, else
        1) for comparison with official outputs only."""
        if official_compat:
            pre_pad = self.cfg.speech_token_pre_pad if self.cfg.speech_token_pre_pad is not None else 1
            return official_vocoder_tokens(rows, self.ids, pre_pad, self.mouth.silence_code)
        return vocoder_tokens(rows, self.ids, self.mouth.delay_rows, silence_code=self.mouth.silence_code)

    def with_config(self, **changes) -> SpeechGenerator:
        """A generator sharing model and tokenizer with some ``DecodeConfig`` fields changed."""
        clone = SpeechGenerator.__new__(SpeechGenerator)
        clone.__dict__.update(self.__dict__)  # same model, tokenizer, packed head and token-text cache
        clone.config = replace(self.config, **changes)
        return clone


def shadow_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A new module tree over the same tensors: swapping its layers leaves ``model`` as it was."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def packed_copy(model: SpeechLM) -> SpeechLM:
    """:func:`shadow_copy` with oneDNN-packed linear layers (``lm_head`` excepted: the speech head packs its
    own rows); the packed weights are new tensors, everything else is shared."""
    shadow = shadow_copy(model)
    pack_linears(shadow, skip=("lm_head",))
    return shadow
