"""SpeechLM prompt rows: the chat prompt as rows and the voice-cloning speech block (spec §2.1).

Every text id of the prompt becomes the row ``(id, pad, .., pad)``. The ``<speech>`` placeholder is
replaced by the speech block: the reference transcript in the text column (right-padded with the
pad text id), P all-pad delay rows, the reference speech tokens grouped k per row, one all-eos row
(the rows come from :mod:`~mgm_omni.generation.speech.layout`, which training shares). The prompt is
prefilled up to and including the assistant ``<|audio_start|>``; the target text ids after it form the
text buffer that the chunk schedule consumes.

The text goes through the mouth's text front-end: user text (target, reference transcript) through
``encode`` (a g2p step where the mouth has one), the chat markup through ``tokenize``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.generation.speech.layout import LayoutError, RowLayout, SpecialIds
from mgm_omni.text import (
    IM_END,
    SPEECH_TOKEN_INDEX,
    TTSPromptConfig,
    as_frontend,
    omni_tts_prompt,
    tokenize_with_placeholders,
    tts_prompt,
)
from mgm_omni.text.errors import TextError

__all__ = ["PromptRows", "SpecialIds", "SpeechPromptError", "check_reference_tokens", "check_text_buffer",
           "omni_prompt_rows", "speech_block", "tts_prompt_rows"]

log = logging.getLogger(__name__)


class SpeechPromptError(ValueError):
    """The text, the reference transcript or the reference speech tokens cannot make a prompt."""


@dataclass
class PromptRows:
    """A prefill and its text buffer.

    Attributes:
        rows: (T, 1 + k) int64, the rows to prefill (they end at the assistant ``<|audio_start|>``).
        buffer: target-text ids still to be voiced (empty in omni mode, filled live).
        block: (start, stop) row span of the speech block inside ``rows``.
    """

    rows: torch.Tensor
    buffer: list[int] = field(default_factory=list)
    block: tuple[int, int] = (0, 0)


def speech_block(
    transcript_ids: Sequence[int],
    reference_tokens: Sequence[int],
    ids: SpecialIds,
    slots: int,
    delay_rows: int,
) -> list[list[int]]:
    """The rows that replace ``<speech>``: (P + G + 1, 1 + k) with G = len(reference_tokens) // k
    (:meth:`RowLayout.speech_block`)."""
    return RowLayout(ids, slots, delay_rows).speech_block(transcript_ids, reference_tokens)


def check_reference_tokens(tokens, cfg: SpeechLMConfig) -> list[int]:
    """Reference speech tokens as ints in [0, speech_eos) (codes only), else :class:`SpeechPromptError`."""
    try:
        values = [operator.index(t) for t in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
    except TypeError as exc:
        raise SpeechPromptError(f"reference speech tokens must be integers ({exc})") from None
    bad = [t for t in values if not 0 <= t < cfg.speech_eos]
    if bad:
        raise SpeechPromptError(f"{len(bad)} reference speech token(s) outside the codebook [0, {cfg.speech_eos}), "
                                f"e.g. {bad[0]}")
    if len(values) < cfg.speech_token_count:
        raise SpeechPromptError(f"reference has {len(values)} speech tokens; at least {cfg.speech_token_count} "
                                "(one row) are needed")
    return values


def tts_prompt_rows(
    tokenizer,
    cfg: SpeechLMConfig,
    text: str,
    reference_text: str,
    reference_tokens: Sequence[int],
    prompt_config: TTSPromptConfig | None = None,
    delay_rows: int | None = None,
) -> PromptRows:
    """The voice-cloning TTS prefill and text buffer for ``text`` (spec §2.1).

    ``tokenizer``: the mouth's text front-end (a bare tokenizer is read as the Qwen BPE front-end);
    ``delay_rows``: P (default: the config's, see ``MouthSpec.delay_rows``).

    Raises:
        SpeechPromptError: empty text, text that is only whitespace/markdown, control tokens written in
            the text, or invalid reference tokens.
    """
    frontend = as_frontend(tokenizer)
    refs = check_reference_tokens(reference_tokens, cfg)
    try:
        prompt = tts_prompt(reference_text, frontend.prepare(text), prompt_config)
    except TextError as exc:
        raise SpeechPromptError(str(exc)) from exc
    rows, block, ids = _prompt_rows(frontend, cfg, prompt, reference_text, refs, delay_rows)
    starts = [i for i, r in enumerate(rows) if r[0] == ids.audio_start]
    cut = starts[-1] + 1
    tail = [r[0] for r in rows[cut:]]
    closing = _closing_ids(frontend)
    if tail[len(tail) - len(closing):] != closing or closing[:1] != [ids.eos_text]:
        raise SpeechPromptError("the prompt does not end with <|im_end|> and a newline; cannot split the buffer")
    buffer = tail[: len(tail) - len(closing)]
    check_text_buffer(buffer, ids, frontend)
    limit = cfg.tokenizer_model_max_length
    if limit is not None and len(rows) > limit:
        # The official code truncates the rows here, which cuts the target text (or worse, the prompt);
        # we keep them: long text is what the chunk schedule is for.
        log.warning("prompt of %d rows exceeds tokenizer_model_max_length=%d; not truncated", len(rows), limit)
    return PromptRows(torch.tensor(rows[:cut], dtype=torch.long), buffer, block)


def omni_prompt_rows(tokenizer, cfg: SpeechLMConfig, reference_text: str, reference_tokens: Sequence[int],
                     prompt_config: TTSPromptConfig | None = None, delay_rows: int | None = None) -> PromptRows:
    """The omni-mode prefill: the TTS prompt up to the assistant ``<|audio_start|>``, empty buffer."""
    frontend = as_frontend(tokenizer)
    refs = check_reference_tokens(reference_tokens, cfg)
    try:
        prompt = omni_tts_prompt(reference_text, prompt_config)
    except TextError as exc:
        raise SpeechPromptError(str(exc)) from exc
    rows, block, _ = _prompt_rows(frontend, cfg, prompt, reference_text, refs, delay_rows)
    return PromptRows(torch.tensor(rows, dtype=torch.long), [], block)


def check_text_buffer(buffer: Sequence[int], ids: SpecialIds, tokenizer) -> None:
    """Reject a buffer with nothing to voice or with ids that would steer the chunk schedule."""
    frontend = as_frontend(tokenizer)
    control = [t for t in buffer if t in ids.control_text or t >= ids.audio_start]
    if control:
        raise SpeechPromptError(f"text contains the control token {frontend.decode([control[0]])!r} "
                                f"(id {control[0]}); remove special tokens from the text")
    if all(frontend.is_skippable(t) for t in buffer):
        raise SpeechPromptError("text has nothing to speak: it is empty or only whitespace / markdown (* #)")


def _prompt_rows(frontend, cfg, prompt: str, reference_text: str, refs: list[int], delay_rows: int | None):
    try:
        ids = SpecialIds.from_tokenizer(frontend, cfg)
        layout = RowLayout(ids, cfg.speech_token_count, cfg.delay_rows if delay_rows is None else delay_rows)
        # the markup is tokenised as is; the user text in it was prepared by the caller
        prompt_ids = tokenize_with_placeholders(prompt, SimpleNamespace(encode=frontend.tokenize))
    except (TextError, LayoutError) as exc:
        raise SpeechPromptError(str(exc)) from exc
    if prompt_ids.count(SPEECH_TOKEN_INDEX) != 1:
        raise SpeechPromptError("the prompt must hold exactly one <speech> placeholder")
    block = layout.speech_block(frontend.encode(reference_text), refs)
    at = prompt_ids.index(SPEECH_TOKEN_INDEX)
    rows = [layout.text_row(t) for t in prompt_ids[:at]] + block + [layout.text_row(t) for t in prompt_ids[at + 1:]]
    return rows, (at, at + len(block)), ids


def _closing_ids(frontend) -> list[int]:
    # The assistant turn closes with <|im_end|> and a newline: two ids for the Qwen BPE, whatever the
    # front-end makes of them otherwise (a phoneme BPE has no newline token).
    return frontend.tokenize(IM_END + "\n")
