"""From generated rows to the flat speech-token stream the vocoder reads (spec §2.5, §2.9 #1).

One rule for offline and streaming (``vocoder_tokens`` feeds every row through ``VocoderTokenStream``):
- the first P rows of every chunk are the trained delay rows: dropped (they should be all-pad);
- the all-eos row that closes a chunk (the row just before a separator), the separator rows and
  everything from ``<|audio_end|>`` on (the END row) are dropped;
- inside kept rows any stray id >= eos (an eos or pad sampled mid-chunk, or a stray all-eos row) becomes
  the mouth's silence code (``MouthSpec.silence_code``), so the timing is kept;
- rows contribute slots 0..k-1 in order (row-major).

The official ``token2audio`` differs: it drops ``speech_token_pre_pad`` rows per chunk with a default
of 1 while prompts are built with 4 delay rows, so 3 delay rows per chunk reach the vocoder (0.48 s
of pause at every chunk start). ``official_vocoder_tokens`` reproduces it for golden checks only.
This is the inverse of :mod:`~mgm_omni.generation.speech.layout`: the tokens a chunk was laid out with come
back out (an incomplete last row's eos fill as silence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mgm_omni.config.mouth import S3_SILENCE_CODE
from mgm_omni.generation.speech.layout import SpecialIds

log = logging.getLogger(__name__)

SILENCE_CODE = S3_SILENCE_CODE  # the release's; a mouth passes its own ``silence_code``


class TokenStreamError(ValueError):
    """A delay row carries speech although ``strict`` extraction was asked for."""


class VocoderTokenStream:
    """Incremental extraction: ``push`` each generated row as it is decoded, ``finish`` at the end.

    A row that is all-eos is held back one row: it is dropped if the next row is a separator (it
    closed the chunk) and emitted as silence otherwise. Every other row comes out immediately.

    Args:
        ids: special ids (separators, speech eos / pad).
        delay_rows: P, the all-pad rows the model was trained to start each chunk with.
        strict: raise :class:`TokenStreamError` when a delay row is not all-pad (a model that does not
            follow the trained delay); otherwise count it in ``delay_violations`` and drop it anyway.
        silence_code: the code that replaces stray ids >= eos.
    """

    def __init__(self, ids: SpecialIds, delay_rows: int, strict: bool = False, silence_code: int = SILENCE_CODE):
        if delay_rows < 0:
            raise ValueError(f"delay_rows must be >= 0, got {delay_rows}")
        self.ids, self.delay_rows, self.strict, self.silence_code = ids, delay_rows, strict, silence_code
        self.reset()

    def reset(self) -> None:
        self.row_in_chunk = 0
        self.held: list[int] | None = None
        self.ended = False
        self.delay_violations = 0
        self.emitted = 0

    def _clean(self, speech: Sequence[int]) -> list[int]:
        eos = self.ids.speech_eos
        return [s if s < eos else self.silence_code for s in speech]

    def push(self, row: Sequence[int]) -> list[int]:
        """Take one generated row ``(text, s_0 .. s_{k-1})``; return the tokens it releases."""
        if self.ended:
            return []
        text, speech = int(row[0]), [int(s) for s in row[1:]]
        if text in (self.ids.audio_sep, self.ids.audio_end):
            self.held = None  # the held all-eos row closed this chunk
            self.row_in_chunk = 0
            self.ended = text == self.ids.audio_end
            return []
        out: list[int] = []
        index, self.row_in_chunk = self.row_in_chunk, self.row_in_chunk + 1
        if index < self.delay_rows:
            if any(s != self.ids.speech_pad for s in speech):
                if self.strict:
                    raise TokenStreamError(f"delay row {index} of a chunk holds speech {speech}; the model does "
                                           f"not follow the trained delay of {self.delay_rows} rows")
                self.delay_violations += 1
            return out
        if self.held is not None:
            out += self._clean(self.held)
            self.held = None
        if all(s == self.ids.speech_eos for s in speech):
            self.held = speech
        else:
            out += self._clean(speech)
        self.emitted += len(out)
        return out

    def finish(self) -> list[int]:
        """End of the rows. A held all-eos row is dropped (the decode stopped right after closing a chunk,
        or on a stray eos row, which is silence either way)."""
        self.held = None
        if self.delay_violations:
            log.debug("%d chunk delay row(s) carried speech and were dropped", self.delay_violations)
        return []


def vocoder_tokens(rows: Sequence[Sequence[int]], ids: SpecialIds, delay_rows: int, strict: bool = False,
                   silence_code: int = SILENCE_CODE) -> list[int]:
    """The whole 25 Hz token stream of generated rows (same rule as :class:`VocoderTokenStream`)."""
    stream = VocoderTokenStream(ids, delay_rows, strict, silence_code)
    out: list[int] = []
    for row in rows:
        out += stream.push(row)
    return out + stream.finish()


def official_vocoder_tokens(rows: Sequence[Sequence[int]], ids: SpecialIds, pre_pad: int = 1,
                            silence_code: int = SILENCE_CODE) -> list[int]:
    """What the official ``token2audio`` hands the vocoder (golden comparison only; do not vocode this).

    Splits at ``<|audio_sep|>`` rows (the last split stops 2 rows before the end, cutting the
    ``<|audio_end|>`` and END rows), drops the first ``pre_pad`` rows and the last row of each split,
    maps ids >= eos to ``silence_code`` and flattens row-major.
    """
    seps = [i for i, r in enumerate(rows) if int(r[0]) == ids.audio_sep]
    bounds = list(zip([0] + [s + 1 for s in seps], seps + [len(rows) - 2]))
    out: list[int] = []
    for start, stop in bounds:
        for r in rows[start + pre_pad:stop - 1]:
            out += [int(s) if int(s) < ids.speech_eos else silence_code for s in r[1:]]
    return out
