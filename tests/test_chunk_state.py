"""The chunk state machine on its own, with a toy tokenizer: chunk ends (sentence end, hard cap), markdown
skipped at a chunk start, the end of speech, aborts (blank run, step cap) and the rules rescaled with k."""

from __future__ import annotations

from chunk_toys import TOY, ToyTokenizer

from mgm_omni.generation.speech.chunk_state import AbortCause, ChunkRules, ChunkState, RowKind
from mgm_omni.text import BPEFrontEnd


def _drive(buffer, sampled, rules=ChunkRules(), k=4):
    state = ChunkState(buffer, TOY, rules, BPEFrontEnd(ToyTokenizer()), k)
    out = []
    while not state.done:
        out.append(state.next_row(sampled(len(out), state)))
    return out


def test_state_machine_chunks_skipping_and_end():
    rules = ChunkRules(sentence_min_text=2, max_text=4)
    eos = lambda i, s: [6561] * 4 if s.phase.value == "pad" else [5, 6, 7, 8]  # noqa: E731
    buffer = [1, 2, 10, 3, 4, 5, 6, 7, 11, 12, 13, 8, 9, 10, 11, 13]
    res = _drive(buffer, eos, rules)
    text = [r.row[0] for r in res]
    # chunk 1 ends at '.' after > 2 ids; chunk 2 at the hard cap of 4 (> 4: 5 ids); chunk 3 skips the
    # leading '**', '\n\n', ' ' and voices 8 9 '.'; the trailing '** ' is only markdown: audio_end.
    assert text == [1, 2, 10, 20, 24, 3, 4, 5, 6, 7, 20, 24, 8, 9, 10, 20, 23, 21]
    kinds = [r.kind for r in res]
    assert kinds.count(RowKind.CLOSE) == 3 and kinds[-2:] == [RowKind.SEP, RowKind.END]
    assert res[-1].row[1:] == (6562,) * 4 and res[-2].row[1:] == (6562,) * 4
    assert all(r.abort is None for r in res)


def test_state_machine_blank_run_and_step_cap():
    blank = [1707, 1788, 1950, 5]  # 3 of 4 blank codes: a blank row
    res = _drive([1, 2, 3], lambda i, s: blank)  # blank from the first row: PAD exits once the run > 8
    close = next(r for r in res if r.kind is RowKind.CLOSE)
    assert close.abort is AbortCause.BLANK_RUN and res.index(close) == 8  # rows 0..8: a run of 9
    res = _drive([1, 2], lambda i, s: [5, 6, 7, 8])  # never eos: the step cap n_steps > 8 * n_text ends it
    close = next(r for r in res if r.kind is RowKind.CLOSE)
    assert close.abort is AbortCause.STEP_CAP and res.index(close) == 17


def test_rules_rescale_with_k():
    assert ChunkRules.for_slots(4) == ChunkRules()
    one = ChunkRules.for_slots(1)
    assert (one.blank_run_limit, one.step_cap_factor, one.blank_min_slots) == (32, 32, 1)
    assert ChunkRules.for_slots(4, omni=True).blank_run_limit == 10
