"""The per-request chunk schedule of Chunk-Based Parallel Decoding (spec §2.2, §2.7).

A request moves through chunks. Each chunk has a TEXT phase (one buffer id per row, speech sampled),
a PAD phase (pad text id while the speech catches up, ending with a forced all-eos CLOSE row), and a
SEP row (``<|audio_sep|>``, or ``<|audio_end|>`` after the last chunk, followed by the END row).
``ChunkState.next_row`` turns the k sampled speech ids of one step into the row to append; it is
plain Python on host ints, one object per request, so requests in a batch keep separate schedules.
:func:`step_row` is the one row step of every decoder (batched TTS, the server engine, omni mode): the
row, whether a safeguard aborted its chunk, and whether the request ends with it. The control rows
(close, separator, END) come from :class:`~mgm_omni.generation.speech.layout.RowLayout`, as in training.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from mgm_omni.generation.speech.layout import ChunkRules, RowLayout, SpecialIds

__all__ = ["AbortCause", "ChunkAbort", "ChunkRules", "ChunkState", "Phase", "RowEvent", "RowKind", "StepResult",
           "step_row"]


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
        ids: special ids; ``rules``: limits; ``text``: the text front-end (``is_sentence_end`` and
            ``is_skippable`` of single ids).
        slots: k.
        text_final: True when no more text will arrive (TTS mode). In omni mode pass False and call
            :meth:`push_text` / :meth:`finish_text` as the MLLM writes.
    """

    def __init__(self, buffer: Iterable[int], ids: SpecialIds, rules: ChunkRules, text, slots: int,
                 text_final: bool = True) -> None:
        self.ids, self.rules, self.text, self.slots = ids, rules, text, slots
        self.layout = RowLayout(ids, slots, delay_rows=0)  # its control rows only: delay rows are the model's
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
        return all(self.text.is_skippable(t) for t in self.buffer)

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
        ids, rules, layout = self.ids, self.rules, self.layout
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
                speech, kind = layout.close_row()[1:], RowKind.CLOSE
                last = self.text_final and self._effectively_empty()
                self.pending = ids.audio_end if last else ids.audio_sep
                self.phase = Phase.SEP
                if long_blank or cap:  # as official: a safeguard firing is an error even if all-eos too
                    abort = AbortCause.BLANK_RUN if long_blank else AbortCause.STEP_CAP
        elif self.phase is Phase.SEP:
            last = self.pending == ids.audio_end
            text, *speech = layout.sep_row(last)
            kind = RowKind.SEP
            self.n_text = self.n_steps = 0  # n_steps counts this SEP row below, as the official loop does
            self.first_of_chunk = True
            self.chunk += 1
            self.phase = Phase.END if last else Phase.TEXT
        elif self.phase is Phase.END:
            text, *speech = layout.end_row()  # do: pad, never sampled
            kind = RowKind.END
            self.done = True
        else:
            if self.first_of_chunk:
                while self.text.is_skippable(self.buffer[0]):
                    self.buffer.popleft()
                self.first_of_chunk = False
            text = self.buffer.popleft()
            self.n_text += 1
            if ((self.text.is_sentence_end(text) and self.n_text > rules.sentence_min_text)
                    or self.n_text > rules.max_text or (not self.buffer and self.text_final)):
                self.phase = Phase.PAD
        self.n_steps += 1
        return StepResult((text, *speech), kind, abort)


@dataclass(frozen=True)
class ChunkAbort:
    """A chunk closed by a safeguard (the official ``tts_error``): which chunk, at which row, why."""

    chunk: int
    row: int
    cause: AbortCause


@dataclass(frozen=True)
class RowEvent:
    """One decoded row of one request, yielded as soon as it is made.

    ``finish_reason`` and ``unspoken`` (the text ids never placed) are set on the request's last row only.
    """

    request: int
    index: int
    row: tuple[int, ...]
    kind: RowKind
    abort: ChunkAbort | None = None
    finish_reason: str | None = None
    unspoken: tuple[int, ...] | None = None


def step_row(state: ChunkState, sampled: list[int], request: int, index: int, max_rows: int,
             room: bool = True) -> RowEvent:
    """The row step: row ``index`` of ``request`` from its k sampled ids, and whether the request ends.

    A request ends with its END row (``"end"``), with its ``max_rows``-th row (``"max_rows"``) or when its
    cache has no room for another row (``"cache_full"``); the last event carries the unspoken text.
    """
    chunk = state.chunk
    res = state.next_row(sampled)
    finish = None
    if state.done:
        finish = "end"
    elif index + 1 >= max_rows:
        finish = "max_rows"
    elif not room:
        finish = "cache_full"
    abort = ChunkAbort(chunk, index, res.abort) if res.abort is not None else None
    unspoken = tuple(state.buffer) if finish is not None else None
    return RowEvent(request, index, res.row, res.kind, abort, finish, unspoken)
