"""The row layout of a SpeechLM sequence, shared by decoding and training (spec §2.1, §2.2, §5).

A row is ``(text id, s_0 .. s_{k-1})``. A sequence is the prompt (chat markup as text rows, the reference
speech block inside it) up to the assistant ``<|audio_start|>``, then the chunks. A chunk:

    rows 0 .. n_text-1         text ids of the chunk        speech: P all-pad delay rows, then its tokens
    rows n_text ..             pad text id                  k per row (the last row filled with eos)
    one CLOSE row              pad text id                  all eos
    one SEP row                <|audio_sep|>, or <|audio_end|> after the last chunk; speech all pad
    (last chunk) one END row   eos text id                  all pad

Text leads speech by P rows; the text column holds the chunk's text from its first row. Chunks split the
text where decoding does (:func:`split_chunks`: a sentence end after more than ``sentence_min_text`` ids, or
more than ``max_text`` ids). Decoding builds its prompt and control rows here; the data code builds whole
training sequences and their labels (:meth:`RowLayout.sequence`); ``token_stream`` reads tokens back out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.config.mouth import S3_BLANK_CODES, MouthSpec

log = logging.getLogger(__name__)

IGNORE = -100  # label of an unsupervised entry (spec §1.6)
_OFFICIAL = MouthSpec()  # the release the chunk limits were tuned on (k = 4 at 25 Hz: 160 ms rows)


class LayoutError(ValueError):
    """Text, tokens or rows that do not make a valid sequence."""


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
        """Ids from a tokenizer or text front-end (``pad_token_id``, ``eos_token_id``) and the config's
        vocabulary layout (the three audio ids end the text vocabulary, spec §1.2)."""
        ids = cls(pad_text=int(tokenizer.pad_token_id), eos_text=int(tokenizer.eos_token_id),
                  audio_start=cfg.text_size - 3, audio_end=cfg.text_size - 2, audio_sep=cfg.text_size - 1,
                  speech_eos=cfg.speech_eos, speech_pad=cfg.speech_pad)
        for name in ("pad_text", "eos_text"):
            if not 0 <= getattr(ids, name) < ids.audio_start:
                raise LayoutError(f"tokenizer {name} id {getattr(ids, name)} is not a text id below "
                                  f"<|audio_start|> ({ids.audio_start}); wrong tokenizer for this model?")
        return ids

    @property
    def control_text(self) -> frozenset[int]:
        """Text ids that steer the schedule and so must never come from user text."""
        return frozenset({self.pad_text, self.eos_text, self.audio_start, self.audio_end, self.audio_sep})


@dataclass(frozen=True)
class ChunkRules:
    """Limits of the chunk schedule (official values for k = 4 at 25 Hz, where a row is 160 ms).

    Args:
        sentence_min_text: a chunk may end at a sentence end once it holds more than this many text ids.
        max_text: a chunk ends after more than this many text ids.
        blank_run_limit: abort a chunk in PAD once more than this many consecutive rows are blank
            (8 in TTS mode, 10 in omni mode).
        step_cap_factor: abort a chunk in PAD once it has more than this many rows per text id.
        blank_min_slots: a row is blank when at least this many of its k ids are blank codes.
        blank_codes: the silence-like codes.
    """

    sentence_min_text: int = 50
    max_text: int = 100
    blank_run_limit: int = 8
    step_cap_factor: int = 8
    blank_min_slots: int = 3
    blank_codes: frozenset[int] = field(default=S3_BLANK_CODES)

    def __post_init__(self) -> None:
        for name in ("sentence_min_text", "max_text", "blank_run_limit", "step_cap_factor", "blank_min_slots"):
            if getattr(self, name) < 1:
                raise ValueError(f"ChunkRules.{name} must be >= 1, got {getattr(self, name)}")
        if self.sentence_min_text > self.max_text:
            raise ValueError("ChunkRules.sentence_min_text must not exceed max_text")

    @classmethod
    def for_mouth(cls, spec: MouthSpec, omni: bool = False) -> ChunkRules:
        """The official limits kept in audio time for this mouth's row length (k / token rate), with its
        blank codes. The release gets exactly the official values."""
        scale = _OFFICIAL.row_seconds / spec.row_seconds
        return cls(blank_run_limit=max(1, round((10 if omni else 8) * scale)),
                   step_cap_factor=max(1, round(8 * scale)), blank_min_slots=math.ceil(3 * spec.slots / 4),
                   blank_codes=spec.blank_codes)

    @classmethod
    def for_slots(cls, k: int, omni: bool = False) -> ChunkRules:
        """:meth:`for_mouth` of the release with k tokens per row (k = 1: 40 ms rows, limits 4x)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return cls.for_mouth(replace(_OFFICIAL, slots=k), omni)


def split_chunks(text_ids: Sequence[int], rules: ChunkRules, text) -> list[list[int]]:
    """The chunks decoding makes of ``text_ids`` (TTS mode): leading skippable ids of every chunk are
    dropped, a chunk ends after a sentence end once it holds more than ``sentence_min_text`` ids, after
    ``max_text + 1`` ids, or with the text; trailing ids that are all skippable make no chunk.

    ``text``: the front-end's ``is_sentence_end`` / ``is_skippable``.
    """
    rest, chunks = list(text_ids), []
    while rest and not all(text.is_skippable(t) for t in rest):
        while text.is_skippable(rest[0]):
            rest.pop(0)
        chunk: list[int] = []
        while rest:
            t = rest.pop(0)
            chunk.append(t)
            if (text.is_sentence_end(t) and len(chunk) > rules.sentence_min_text) or len(chunk) > rules.max_text:
                break
        chunks.append(chunk)
    return chunks


@dataclass(frozen=True)
class RowLayout:
    """Rows of one mouth: its special ids, k slots and P delay rows."""

    ids: SpecialIds
    slots: int
    delay_rows: int

    def __post_init__(self) -> None:
        if self.slots < 1 or self.delay_rows < 0:
            raise LayoutError(f"a layout needs slots >= 1 and delay_rows >= 0, got {self.slots}, {self.delay_rows}")

    # ----------------------------------------------------------------------------------- single rows

    def text_row(self, token: int) -> list[int]:
        """A row carrying only text: the speech slots hold pad (every row is a (1 + k)-way mean, spec §1.3)."""
        return [token] + [self.ids.speech_pad] * self.slots

    def close_row(self) -> list[int]:
        """The forced all-eos row that closes a chunk (text: pad)."""
        return [self.ids.pad_text] + [self.ids.speech_eos] * self.slots

    def sep_row(self, last: bool) -> list[int]:
        """``<|audio_end|>`` after the last chunk, ``<|audio_sep|>`` between chunks; speech all pad."""
        return self.text_row(self.ids.audio_end if last else self.ids.audio_sep)

    def end_row(self) -> list[int]:
        """The last row: the eos text id, speech all pad (never sampled, spec §2.9 #5)."""
        return self.text_row(self.ids.eos_text)

    # ----------------------------------------------------------------------------------- blocks

    def speech_block(self, transcript_ids: Sequence[int], reference_tokens: Sequence[int]) -> list[list[int]]:
        """The rows that replace ``<speech>`` in the prompt: (P + G + 1, 1 + k), G = len(tokens) // k.

        Transcript ids from the first row (right-padded with the pad text id), P all-pad rows, the
        reference tokens k per row (the up to k-1 left over are dropped), one all-eos row. A transcript
        longer than the block is cut with a warning (as officially, silently): it does not match the audio.
        """
        k, groups = self.slots, len(reference_tokens) // self.slots
        n = self.delay_rows + groups + 1
        transcript = list(transcript_ids)
        if len(transcript) > n:
            log.warning("reference transcript has %d tokens but the speech block has only %d rows (%d reference "
                        "speech tokens): %d transcript tokens dropped; does the transcript match the audio?",
                        len(transcript), n, len(reference_tokens), len(transcript) - n)
            transcript = transcript[:n]
        text = transcript + [self.ids.pad_text] * (n - len(transcript))
        speech = [[self.ids.speech_pad] * k for _ in range(self.delay_rows)]
        speech += [list(reference_tokens[g * k:(g + 1) * k]) for g in range(groups)]
        speech.append([self.ids.speech_eos] * k)
        return [[t] + s for t, s in zip(text, speech)]

    def chunk_rows(self, text_ids: Sequence[int], tokens: Sequence[int], last: bool,
                   filler: int | None = None) -> list[list[int]]:
        """The rows of one chunk, separator (and END row if ``last``) included.

        ``tokens`` (relative codes) fill k per row after the P delay rows; an incomplete last row is filled
        with eos (extraction reads it as silence). The close row must come after the last text id (decoding
        closes chunks in PAD only), so when the text needs more rows than the speech has, the speech is
        extended with ``filler`` rows (a silence code; required then).
        """
        k, ids = self.slots, self.ids
        if not text_ids:
            raise LayoutError("a chunk needs at least one text id")
        control = [t for t in text_ids if t in ids.control_text or t >= ids.audio_start]
        if control:
            raise LayoutError(f"chunk text holds the control id {control[0]}; only plain text ids can be voiced")
        bad = [t for t in tokens if not 0 <= t < ids.speech_eos]
        if bad:
            raise LayoutError(f"speech tokens must be codes in [0, {ids.speech_eos}), got {bad[0]}")
        speech = [[ids.speech_pad] * k for _ in range(self.delay_rows)]
        speech += [list(tokens[i:i + k]) + [ids.speech_eos] * (k - len(tokens[i:i + k]))
                   for i in range(0, len(tokens), k)]
        if len(speech) < len(text_ids):
            if filler is None:
                raise LayoutError(f"the chunk has {len(text_ids)} text ids but only {len(speech)} speech rows; "
                                  "pass a silence filler or move text to the next chunk")
            speech += [[filler] * k for _ in range(len(text_ids) - len(speech))]
        text = list(text_ids) + [ids.pad_text] * (len(speech) - len(text_ids))
        rows = [[t] + s for t, s in zip(text, speech)]
        rows += [self.close_row(), self.sep_row(last)]
        return rows + [self.end_row()] if last else rows

    def sequence(self, prompt_rows: Sequence[Sequence[int]], chunks: Sequence[tuple[Sequence[int], Sequence[int]]],
                 filler: int | None = None, text_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """A training sequence and its labels: (T, 1 + k) rows and (T, 1 + k) labels (``IGNORE`` = -100).

        ``prompt_rows`` end at the assistant ``<|audio_start|>`` (as decoding prefills them); ``chunks`` are
        (text ids, speech tokens) pairs. Labels are aligned with rows (the loss shifts them, spec §1.6):
        prompt rows are unsupervised; generated rows supervise their text column (unless ``text_labels`` is
        False) and the speech of delay, token and close rows; the forced SEP and END rows' speech is not.
        """
        prompt = [list(r) for r in prompt_rows]
        if not prompt or prompt[-1][0] != self.ids.audio_start:
            raise LayoutError("prompt rows must end at the assistant <|audio_start|> row")
        if not chunks:
            raise LayoutError("a sequence needs at least one chunk")
        rows = prompt[:]
        for i, (text_ids, tokens) in enumerate(chunks):
            rows += self.chunk_rows(text_ids, tokens, last=i == len(chunks) - 1, filler=filler)
        rows_t = torch.tensor(rows, dtype=torch.long)  # (T, 1 + k)
        labels = rows_t.clone()
        labels[: len(prompt)] = IGNORE
        if not text_labels:
            labels[:, 0] = IGNORE
        forced = torch.isin(rows_t[:, 0], torch.tensor([self.ids.audio_sep, self.ids.audio_end, self.ids.eos_text]))
        forced[: len(prompt)] = False
        labels[forced, 1:] = IGNORE
        return rows_t, labels
