"""k = 4 versus k = 1 slots per row: on a scripted model that speaks a fixed 25 Hz script both engines give
the same vocoder token stream with the same chunk schedule (k = 1: 4x the speech rows); k = 1 end to end on
a random SpeechLM batches like it decodes alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from chunk_toys import TOY, ToyTokenizer

from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.chunk_state import ChunkRules, RowKind
from mgm_omni.generation.speech.chunked_decode import ChunkedDecoder, DecodeConfig
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds
from mgm_omni.generation.speech.runner import SpeechLMRunner
from mgm_omni.generation.speech.token_stream import vocoder_tokens
from mgm_omni.text import BPEFrontEnd

pytestmark = pytest.mark.usefixtures("one_thread")


def _code(t: int, j: int) -> int:
    return (t * 37 + j * 11) % 1700  # below every blank code (the smallest is 1707)


class ScriptedRunner:
    """A stand-in for the SpeechLM: every text id it has seen in the current chunk contributes the
    4 codes ``_code(t, 0..3)`` to the chunk's 25 Hz script; it speaks the script k codes per row after
    P all-pad delay rows, then eos. Speech never overtakes the text (4 codes per text id >= k), so
    with the same text the k = 4 and k = 1 engines must produce the same token stream."""

    def __init__(self, k: int, delay: int = 4, size: int = 6563) -> None:
        self.num_slots, self.delay, self.size = k, delay, size
        self.initial_rows = self.max_rows = None

    def _logits(self, seq) -> torch.Tensor:
        k, r = self.num_slots, seq["row"]
        script = [_code(t, j) for t in seq["text"] for j in range(4)]
        at = (r - self.delay) * k
        target = [6562] * k if r < self.delay else [script[at + i] if at + i < len(script) else 6561
                                                      for i in range(k)]
        out = torch.zeros(k, self.size)
        out[torch.arange(k), torch.tensor(target)] = 10.0
        return out

    def start(self, prompts):
        self.seqs = [{"text": [], "row": 0} for _ in prompts]
        return torch.stack([self._logits(s) for s in self.seqs])

    def step(self, rows):
        for seq, row in zip(self.seqs, rows.tolist()):
            if row[0] in (TOY.audio_sep, TOY.audio_end):
                seq["text"], seq["row"] = [], 0
                continue
            if row[0] < 20:
                seq["text"].append(row[0])
            seq["row"] += 1
        return torch.stack([self._logits(s) for s in self.seqs])

    def keep(self, index):
        self.seqs = [self.seqs[i] for i in index]

    def room(self, index):
        return True

    def reset(self):
        pass


def test_k4_and_k1_engines_agree_on_the_token_stream():
    texts = [[1, 2, 3, 10, 4, 5, 6, 7, 8, 9, 10, 11, 13, 2, 4, 6, 10], [3, 3, 4, 4, 10]]
    prompts = [PromptRows(torch.zeros(5, 5, dtype=torch.long), t) for t in texts]
    rules = {k: dataclasses.replace(ChunkRules.for_slots(k), sentence_min_text=3, max_text=6) for k in (4, 1)}
    outs = {}
    for k in (4, 1):
        dec = ChunkedDecoder(ScriptedRunner(k), TOY, BPEFrontEnd(ToyTokenizer()), DecodeConfig(
            sampling=SamplingConfig(temperature=0.0), rules=rules[k]))
        outs[k] = dec.generate([PromptRows(p.rows[:, : k + 1], p.buffer) for p in prompts])
    for i, text in enumerate(texts):
        r4, r1 = outs[4][i], outs[1][i]
        assert not r4.tts_error and not r1.tts_error
        voiced = [r[0] for r, kd in zip(r4.rows, r4.kinds) if kd is RowKind.TEXT]
        assert voiced == [t for t in text if t not in (11, 13)]  # markdown skipped at the chunk start
        expected = [_code(t, j) for t in voiced for j in range(4)]
        assert vocoder_tokens(r4.rows, TOY, 4) == expected
        assert vocoder_tokens(r1.rows, TOY, 4) == expected
        # k = 1 needs 4x the speech rows for the same audio (less overall: text, eos and SEP rows are shared)
        n_chunks = r4.kinds.count(RowKind.SEP)
        assert n_chunks == r1.kinds.count(RowKind.SEP) >= 1  # same chunk schedule
        speech_rows = {k: sum(kd in (RowKind.TEXT, RowKind.PAD) for kd in r.kinds) - 4 * n_chunks
                       for k, r in ((4, r4), (1, r1))}  # minus the 4 delay rows per chunk
        assert speech_rows[1] == 4 * speech_rows[4] == len(expected)


def test_k1_engine_with_a_real_model_batched_equals_alone():
    """k = 1 end to end on a random SpeechLM with a speech vocabulary of 40: rows have 2 columns, chunks
    end (here through the step cap), batching does not change the rows."""
    from mgm_omni.config import SpeechLMConfig
    from mgm_omni.models.speech_lm import random_speech_lm

    cfg = SpeechLMConfig(vocab_size=50 + 40, tokenizer_text_size=50, tokenizer_speech_size=40, speech_token_count=1,
                         hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, tts_adapter_config="(1,32,4_2,48)")
    model = random_speech_lm(cfg, seed=5)
    ids = SpecialIds(pad_text=20, eos_text=21, audio_start=47, audio_end=48, audio_sep=49, speech_eos=38,
                     speech_pad=39)
    dec = ChunkedDecoder(SpeechLMRunner(model), ids, BPEFrontEnd(ToyTokenizer()),
                         DecodeConfig(sampling=SamplingConfig(temperature=0.0), max_new_rows=400,
                                      rules=ChunkRules(sentence_min_text=2, max_text=6, step_cap_factor=3,
                                                       blank_min_slots=1)))
    prompts = [PromptRows(torch.tensor([[i % 19, 39] for i in range(n)]), [1, 2, 10, 3, 4, 5, 10] * 3)
               for n in (7, 12)]
    together = dec.generate(prompts)
    for p, res in zip(prompts, together):
        alone = dec.generate([p])[0]
        assert res.rows == alone.rows and all(len(r) == 2 for r in res.rows)
        assert res.finish_reason in ("end", "max_rows") and RowKind.SEP in res.kinds
