"""The per-request chunk schedule of Chunk-Based Parallel Decoding (spec §2.2, §2.7).

A request moves through chunks. Each chunk has a TEXT phase (one buffer id per row, speech sampled),
a PAD phase (pad text id while the speech catches up, ending with a forced all-eos CLOSE row), and a
SEP row (``<|audio_sep|>``, or ``<|audio_end|>`` after the last chunk, followed by the END row).
``ChunkState.next_row`` turns the k sampled speech ids of one step into the row to append; it is
plain Python on host ints, one object per request, so requests in a batch keep separate schedules.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from mgm_omni.generation.speech.prompt import SpecialIds
from mgm_omni.text import is_sentence_end, is_skippable

# Spec Appendix A: S3 codes that sound like silence (113 values, verbatim).
BLANK_SPEECH_TOKENS = frozenset((
    1707, 1788, 1950, 1951, 1959, 2031, 2040, 2112, 3894, 3903, 3975, 4056, 4137, 4138, 4143, 4146, 4164, 4173,
    4218, 4219, 4227, 4299, 4300, 5520, 5523, 5547, 5760, 5763, 5766, 5790, 6009, 6081, 6082, 6087, 6090, 6091,
    6092, 6117, 6162, 6163, 6165, 6168, 6171, 6172, 6198, 6243, 6244, 6249, 6252, 6253, 6261, 6276, 6279, 6296,
    6299, 6321, 6324, 6325, 6330, 6331, 6333, 6334, 6335, 6339, 6342, 6351, 6357, 6360, 6361, 6378, 6387, 6399,
    6402, 6405, 6406, 6408, 6411, 6412, 6413, 6414, 6415, 6416, 6432, 6433, 6435, 6436, 6438, 6439, 6441, 6459,
    6460, 6461, 6466, 6468, 6469, 6480, 6483, 6486, 6487, 6489, 6492, 6493, 6495, 6496, 6511, 6513, 6514, 6519,
    6522, 6523, 6540, 6541, 6549,
))


class RowKind(str, enum.Enum):
    """What a generated row is; the token stream for the vocoder keeps only TEXT and PAD rows."""

    TEXT = "text"  # text column from the buffer
    PAD = "pad"  # pad text id, speech catching up
    CLOSE = "close"  # forced all-eos row that ends a chunk
    SEP = "sep"  # <|audio_sep|> or <|audio_end|>, speech all-pad
    END = "end"  # eos text id, speech all-pad; the last row


class AbortCause(str, enum.Enum):
    """Why a chunk was closed by a safeguard instead of by the model's own eos (``tts_error``)."""

    BLANK_RUN = "blank_run"  # too many consecutive silence-like rows
    STEP_CAP = "step_cap"  # the chunk ran past step_cap_factor rows per text token


@dataclass(frozen=True)
class ChunkRules:
    """Limits of the chunk schedule (official values for k = 4; rows are 160 ms there).

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
    blank_codes: frozenset[int] = BLANK_SPEECH_TOKENS

    def __post_init__(self) -> None:
        for name in ("sentence_min_text", "max_text", "blank_run_limit", "step_cap_factor", "blank_min_slots"):
            if getattr(self, name) < 1:
                raise ValueError(f"ChunkRules.{name} must be >= 1, got {getattr(self, name)}")
        if self.sentence_min_text > self.max_text:
            raise ValueError("ChunkRules.sentence_min_text must not exceed max_text")

    @classmethod
    def for_slots(cls, k: int, omni: bool = False) -> ChunkRules:
        """Official limits rescaled to k ids per row, so they mean the same audio time for any k.

        With k = 4 these are exactly the official values; with k = 1 a row is 40 ms, so the row limits
        grow 4x and one blank id makes a blank row.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scale = 4 / k
        return cls(blank_run_limit=max(1, round((10 if omni else 8) * scale)),
                   step_cap_factor=max(1, round(8 * scale)), blank_min_slots=math.ceil(3 * k / 4))


class TokenText:
    """Sentence-end and skippable tests of single text ids, decoded once and cached."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[bool, bool]] = {}

    def _flags(self, t: int) -> tuple[bool, bool]:
        flags = self._cache.get(t)
        if flags is None:
            text = self.tokenizer.decode([t])
            flags = self._cache[t] = (is_sentence_end(text), is_skippable(text))
        return flags

    def sentence_end(self, t: int) -> bool:
        return self._flags(t)[0]

    def skippable(self, t: int) -> bool:
        return self._flags(t)[1]


class Phase(enum.Enum):
    TEXT = "text"
    PAD = "pad"
    SEP = "sep"
    END = "end"


@dataclass
class StepResult:
    """One appended row and what happened: its kind, and the abort cause if a safeguard closed the chunk."""

    row: tuple[int, ...]
    kind: RowKind
    abort: AbortCause | None = None


class ChunkState:
    """Chunk schedule of one request.

    Args:
        buffer: text ids to voice (TTS), or the first ids of a live text stream (omni).
        ids: special ids; ``rules``: limits; ``token_text``: sentence-end / skippable tests.
        text_final: True when no more text will arrive (TTS mode). In omni mode pass False and call
            :meth:`push_text` / :meth:`finish_text` as the MLLM writes.
    """

    def __init__(self, buffer: Iterable[int], ids: SpecialIds, rules: ChunkRules, token_text: TokenText,
                 slots: int, text_final: bool = True) -> None:
        self.ids, self.rules, self.token_text, self.slots = ids, rules, token_text, slots
        self._initial = list(buffer)
        self._initial_final = text_final
        self.reset()

    def reset(self) -> None:
        """Back to the start of the request (the initial buffer, first chunk)."""
        self.buffer: deque[int] = deque(self._initial)
        self.text_final = self._initial_final
        self.phase = Phase.TEXT
        self.pending = self.ids.audio_sep
        self.first_of_chunk = True
        self.n_text = self.n_steps = self.blank_run = 0
        self.chunk = 0
        self.done = False

    def push_text(self, ids: Iterable[int]) -> None:
        """Omni mode: more text ids from the MLLM."""
        self.buffer.extend(ids)

    def finish_text(self) -> None:
        """Omni mode: the MLLM has finished; the buffer will not grow any more."""
        self.text_final = True

    def _effectively_empty(self) -> bool:
        # Spec §2.9 #4: a buffer of only whitespace/markdown would be skipped by the next chunk anyway.
        return all(self.token_text.skippable(t) for t in self.buffer)

    def _no_text_left(self) -> bool:
        # At a chunk start the skippable ids would be dropped, so they do not count as text.
        return self._effectively_empty() if self.first_of_chunk else not self.buffer

    def ready(self) -> bool:
        """Whether a row can be made now. False only in omni mode, in TEXT, while the MLLM is running and
        the buffer holds nothing to voice yet (spec §2.9 #4: wait for the next MLLM token)."""
        return self.phase is not Phase.TEXT or self.text_final or not self._no_text_left()

    def next_row(self, sampled: list[int]) -> StepResult:
        """The row for this step from the k sampled speech ids (relative)."""
        if self.done:
            raise RuntimeError("next_row called after the END row")
        if not self.ready():
            raise RuntimeError("no text to place yet: check ready() before stepping in omni mode")
        ids, rules, k = self.ids, self.rules, self.slots
        blank = sum(s in rules.blank_codes for s in sampled) >= rules.blank_min_slots
        self.blank_run = self.blank_run + 1 if blank else 0
        speech, kind, abort = list(sampled), RowKind.TEXT, None
        if self.phase is Phase.TEXT and self.text_final and self._no_text_left():
            self.phase = Phase.PAD  # omni: the MLLM finished and nothing is left, PAD starts on this row
        if self.phase is Phase.PAD:
            text, kind = ids.pad_text, RowKind.PAD
            # A chunk without text (omni edge case) closes at once, without an error.
            empty = self.n_text == 0
            cap = not empty and self.n_steps > rules.step_cap_factor * self.n_text
            long_blank = self.blank_run > rules.blank_run_limit
            if empty or cap or long_blank or all(s == ids.speech_eos for s in sampled):
                speech, kind = [ids.speech_eos] * k, RowKind.CLOSE
                last = self.text_final and self._effectively_empty()
                self.pending = ids.audio_end if last else ids.audio_sep
                self.phase = Phase.SEP
                if long_blank or cap:  # as official: a safeguard firing is an error even if all-eos too
                    abort = AbortCause.BLANK_RUN if long_blank else AbortCause.STEP_CAP
        elif self.phase is Phase.SEP:
            text, speech, kind = self.pending, [ids.speech_pad] * k, RowKind.SEP
            self.n_text = self.n_steps = 0  # n_steps counts this SEP row below, as the official loop does
            self.first_of_chunk = True
            self.chunk += 1
            self.phase = Phase.END if self.pending == ids.audio_end else Phase.TEXT
        elif self.phase is Phase.END:
            text, speech, kind = ids.eos_text, [ids.speech_pad] * k, RowKind.END  # do: pad, never sampled
            self.done = True
        else:
            if self.first_of_chunk:
                while self.token_text.skippable(self.buffer[0]):
                    self.buffer.popleft()
                self.first_of_chunk = False
            text = self.buffer.popleft()
            self.n_text += 1
            if ((self.token_text.sentence_end(text) and self.n_text > rules.sentence_min_text)
                    or self.n_text > rules.max_text or (not self.buffer and self.text_final)):
                self.phase = Phase.PAD
        self.n_steps += 1
        return StepResult((text, *speech), kind, abort)
