"""SpeechLM prompt rows: the chat prompt as rows and the voice-cloning speech block (spec §2.1).

Every text id of the prompt becomes the row ``(id, pad, .., pad)``. The ``<speech>`` placeholder is
replaced by the speech block: the reference transcript in the text column (right-padded with the
pad text id), P all-pad delay rows, the reference speech tokens grouped k per row, one all-eos row.
The prompt is prefilled up to and including the assistant ``<|audio_start|>``; the target text ids
after it form the text buffer that the chunk schedule consumes.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.text import (
    SPEECH_TOKEN_INDEX,
    TTSPromptConfig,
    is_skippable,
    omni_tts_prompt,
    tokenize_with_placeholders,
    tts_prompt,
)
from mgm_omni.text.errors import TextError

log = logging.getLogger(__name__)


class SpeechPromptError(ValueError):
    """The text, the reference transcript or the reference speech tokens cannot make a prompt."""


@dataclass(frozen=True)
class SpecialIds:
    """Text-column ids the decoder writes itself, and the per-slot speech eos / pad (relative ids)."""

    pad_text: int  # <|endoftext|>: text column while speech catches up
    eos_text: int  # <|im_end|>: the END row
    audio_start: int
    audio_end: int
    audio_sep: int
    speech_eos: int
    speech_pad: int

    @classmethod
    def from_tokenizer(cls, tokenizer, cfg: SpeechLMConfig) -> SpecialIds:
        """Ids from a tokenizer (``pad_token_id``, ``eos_token_id``) and the config's vocabulary layout."""
        ids = cls(pad_text=int(tokenizer.pad_token_id), eos_text=int(tokenizer.eos_token_id),
                  audio_start=cfg.text_size - 3, audio_end=cfg.text_size - 2, audio_sep=cfg.text_size - 1,
                  speech_eos=cfg.speech_eos, speech_pad=cfg.speech_pad)
        for name in ("pad_text", "eos_text"):
            if not 0 <= getattr(ids, name) < ids.audio_start:
                raise SpeechPromptError(f"tokenizer {name} id {getattr(ids, name)} is not a text id below "
                                        f"<|audio_start|> ({ids.audio_start}); wrong tokenizer for this model?")
        return ids

    @property
    def control_text(self) -> frozenset[int]:
        """Text ids that steer the schedule and so must never come from user text."""
        return frozenset({self.pad_text, self.eos_text, self.audio_start, self.audio_end, self.audio_sep})


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
    """The rows that replace ``<speech>``: (P + G + 1, 1 + k) with G = len(reference_tokens) // k.

    A transcript longer than the block is cut to fit (as the official code does) with a warning: it
    means the transcript does not belong to the reference audio.
    """
    groups = len(reference_tokens) // slots
    n = delay_rows + groups + 1
    transcript = list(transcript_ids)
    if len(transcript) > n:
        log.warning("reference transcript has %d tokens but the speech block has only %d rows (%d reference "
                    "speech tokens): %d transcript tokens dropped; does the transcript match the audio?",
                    len(transcript), n, len(reference_tokens), len(transcript) - n)
        transcript = transcript[:n]
    text = transcript + [ids.pad_text] * (n - len(transcript))
    speech = [[ids.speech_pad] * slots for _ in range(delay_rows)]
    speech += [list(reference_tokens[g * slots:(g + 1) * slots]) for g in range(groups)]
    speech.append([ids.speech_eos] * slots)
    return [[t] + s for t, s in zip(text, speech)]


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
) -> PromptRows:
    """The voice-cloning TTS prefill and text buffer for ``text`` (spec §2.1).

    Raises:
        SpeechPromptError: empty text, text that is only whitespace/markdown, control tokens written in
            the text, or invalid reference tokens.
    """
    refs = check_reference_tokens(reference_tokens, cfg)
    try:
        prompt = tts_prompt(reference_text, text, prompt_config)
    except TextError as exc:
        raise SpeechPromptError(str(exc)) from exc
    rows, block = _prompt_rows(tokenizer, cfg, prompt, reference_text, refs)
    ids = SpecialIds.from_tokenizer(tokenizer, cfg)
    starts = [i for i, r in enumerate(rows) if r[0] == ids.audio_start]
    cut = starts[-1] + 1
    tail = [r[0] for r in rows[cut:]]
    if tail[-2:] != [ids.eos_text, _newline_id(tokenizer)]:
        raise SpeechPromptError("the prompt does not end with <|im_end|> and a newline; cannot split the buffer")
    buffer = tail[:-2]
    check_text_buffer(buffer, ids, tokenizer)
    limit = cfg.tokenizer_model_max_length
    if limit is not None and len(rows) > limit:
        # The official code truncates the rows here, which cuts the target text (or worse, the prompt);
        # we keep them: long text is what the chunk schedule is for.
        log.warning("prompt of %d rows exceeds tokenizer_model_max_length=%d; not truncated", len(rows), limit)
    return PromptRows(torch.tensor(rows[:cut], dtype=torch.long), buffer, block)


def omni_prompt_rows(tokenizer, cfg: SpeechLMConfig, reference_text: str, reference_tokens: Sequence[int],
                     prompt_config: TTSPromptConfig | None = None) -> PromptRows:
    """The omni-mode prefill: the TTS prompt up to the assistant ``<|audio_start|>``, empty buffer."""
    refs = check_reference_tokens(reference_tokens, cfg)
    try:
        prompt = omni_tts_prompt(reference_text, prompt_config)
    except TextError as exc:
        raise SpeechPromptError(str(exc)) from exc
    rows, block = _prompt_rows(tokenizer, cfg, prompt, reference_text, refs)
    return PromptRows(torch.tensor(rows, dtype=torch.long), [], block)


def check_text_buffer(buffer: Sequence[int], ids: SpecialIds, tokenizer) -> None:
    """Reject a buffer with nothing to voice or with ids that would steer the chunk schedule."""
    control = [t for t in buffer if t in ids.control_text or t >= ids.audio_start]
    if control:
        raise SpeechPromptError(f"text contains the control token {tokenizer.decode([control[0]])!r} "
                                f"(id {control[0]}); remove special tokens from the text")
    if all(is_skippable(tokenizer.decode([t])) for t in buffer):
        raise SpeechPromptError("text has nothing to speak: it is empty or only whitespace / markdown (* #)")


def _prompt_rows(tokenizer, cfg, prompt: str, reference_text: str, refs: list[int]):
    ids = SpecialIds.from_tokenizer(tokenizer, cfg)
    k = cfg.speech_token_count
    try:
        prompt_ids = tokenize_with_placeholders(prompt, tokenizer)
    except TextError as exc:
        raise SpeechPromptError(str(exc)) from exc
    if prompt_ids.count(SPEECH_TOKEN_INDEX) != 1:
        raise SpeechPromptError("the prompt must hold exactly one <speech> placeholder")
    block = speech_block(tokenizer.encode(reference_text), refs, ids, k, cfg.delay_rows)
    at = prompt_ids.index(SPEECH_TOKEN_INDEX)
    pad = [ids.speech_pad] * k
    rows = [[t] + pad for t in prompt_ids[:at]] + block + [[t] + pad for t in prompt_ids[at + 1:]]
    return rows, (at, at + len(block))


def _newline_id(tokenizer) -> int:
    nl = tokenizer.encode("\n")
    if len(nl) != 1:
        raise SpeechPromptError("tokenizer does not encode a newline as one token")
    return nl[0]
