"""The row layout shared by decoding and training: a synthetic utterance laid out as a training sequence is
exactly what the decoder's chunk state machine makes when fed the same speech (teacher forcing), its tokens
come back through the extraction rule (spec §2.5 "Do"), its labels mask what decoding forces, and the
training loss over it equals the decoder's step-by-step loss."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.generation.speech.chunk_state import ChunkState, RowKind
from mgm_omni.generation.speech.layout import IGNORE, ChunkRules, LayoutError, RowLayout, SpecialIds, split_chunks
from mgm_omni.generation.speech.runner import SpeechLMRunner
from mgm_omni.generation.speech.token_stream import vocoder_tokens
from mgm_omni.models.speech_lm import random_speech_lm, speech_lm_loss
from mgm_omni.text import BPEFrontEnd

K, P, CODES = 2, 2, 38  # speech ids: codes 0..37, eos 38, pad 39
IDS = SpecialIds(pad_text=20, eos_text=21, audio_start=47, audio_end=48, audio_sep=49, speech_eos=38, speech_pad=39)
RULES = ChunkRules(sentence_min_text=2, max_text=6, blank_codes=frozenset())
SILENCE = 0


class ToyTokenizer:
    """ids 0..9 are words, 10 is '.', 11 is '**', 12 is '\\n\\n'."""

    pad_token_id, eos_token_id = 20, 21

    def decode(self, ids):
        return "".join({10: ".", 11: "**", 12: "\n\n"}.get(i, f" w{i}") for i in ids)


TEXT = BPEFrontEnd(ToyTokenizer())
BUFFER = [12, 1, 2, 10, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 11, 4, 10, 5, 12, 11]
PROMPT = [[3, 39, 39], [4, 39, 39], [IDS.audio_start, 39, 39]]  # ends at the assistant <|audio_start|>


def _utterance(extra=(3, 1, 4, 0), seed=0):
    """Chunks of BUFFER as decoding cuts them, each with enough random speech (an odd count in some)."""
    gen = torch.Generator().manual_seed(seed)
    chunks = split_chunks(BUFFER, RULES, TEXT)
    return [(c, torch.randint(0, CODES, (K * len(c) + e,), generator=gen).tolist()) for c, e in zip(chunks, extra)]


def test_chunks_split_where_decoding_does():
    assert split_chunks(BUFFER, RULES, TEXT) == [[1, 2, 10], [3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 11, 4, 10], [5, 12, 11]]


def test_layout_is_what_the_decoder_makes_from_the_same_speech():
    layout = RowLayout(IDS, K, P)
    rows, _ = layout.sequence(PROMPT, _utterance())
    generated = rows[len(PROMPT):].tolist()
    state = ChunkState(BUFFER, IDS, RULES, TEXT, K)
    made = [state.next_row(r[1:]) for r in generated]  # the layout's speech stands in for sampled speech
    assert [list(m.row) for m in made] == generated and state.done
    assert all(m.abort is None for m in made)
    kinds = [m.kind for m in made]
    assert kinds.count(RowKind.CLOSE) == kinds.count(RowKind.SEP) == 4 and kinds[-1] is RowKind.END
    assert [r[0] for r, k in zip(generated, kinds) if k is RowKind.TEXT] == sum(split_chunks(BUFFER, RULES, TEXT), [])


def test_tokens_come_back_through_the_extraction_rule():
    layout = RowLayout(IDS, K, P)
    utterance = _utterance()
    rows, _ = layout.sequence(PROMPT, utterance)
    expected = []
    for _, tokens in utterance:  # an odd count fills its last row with eos, which extraction reads as silence
        expected += tokens + [SILENCE] * (-len(tokens) % K)
    assert vocoder_tokens(rows[len(PROMPT):].tolist(), IDS, P, strict=True, silence_code=SILENCE) == expected


def test_labels_supervise_what_decoding_samples():
    layout = RowLayout(IDS, K, P)
    rows, labels = layout.sequence(PROMPT, _utterance())
    n = len(PROMPT)
    assert (labels[:n] == IGNORE).all()
    gen_rows, gen_labels = rows[n:], labels[n:]
    forced = torch.isin(gen_rows[:, 0], torch.tensor([IDS.audio_sep, IDS.audio_end, IDS.eos_text]))
    assert int(forced.sum()) == 5  # 3 separators, <|audio_end|>, the END row
    assert (gen_labels[forced, 1:] == IGNORE).all() and torch.equal(gen_labels[~forced], gen_rows[~forced])
    assert torch.equal(gen_labels[:, 0], gen_rows[:, 0])  # the text column is supervised (spec §1.6)
    assert (layout.sequence(PROMPT, _utterance(), text_labels=False)[1][:, 0] == IGNORE).all()
    delay = gen_rows[:P]  # the first chunk's delay rows: all pad, and supervised as pad
    assert (delay[:, 1:] == IDS.speech_pad).all() and (gen_labels[:P, 1:] == IDS.speech_pad).all()


def test_training_loss_equals_the_decoders_step_by_step_loss():
    """One parallel forward over the laid-out sequence and its labels gives the same speech cross-entropy as
    the decoder's cached steps over the same rows: labels line up with what each decode step predicts."""
    cfg = SpeechLMConfig(vocab_size=50 + K * 40, tokenizer_text_size=50, tokenizer_speech_size=40,
                         speech_token_count=K, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tts_adapter_config="(1,32,4_2,48)")
    model = random_speech_lm(cfg, seed=3)
    rows, labels = RowLayout(IDS, K, P).sequence(PROMPT, _utterance())
    with torch.no_grad():
        h, g = model(rows[None])
        _, _, loss_speech = speech_lm_loss(model.text_logits(h), model.speech_logits(g), labels[None])
    runner, n = SpeechLMRunner(model), len(PROMPT)
    steps = [runner.start([rows[:n]])[0]]  # (k, S): predicts row n
    steps += [runner.step(rows[t:t + 1])[0] for t in range(n, rows.shape[0] - 1)]
    logits = torch.stack(steps)  # (T - n, k, S), row t's prediction
    target = labels[n:, 1:]
    keep = target != IGNORE
    decoded = torch.nn.functional.cross_entropy(logits[keep], target[keep])
    assert torch.allclose(loss_speech, decoded, atol=1e-5)


def test_text_loss_weight_scales_only_the_text_term():
    from mgm_omni.training.speechlm_objective import SpeechLMObjective

    cfg = SpeechLMConfig(vocab_size=50 + K * 40, tokenizer_text_size=50, tokenizer_speech_size=40,
                         speech_token_count=K, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tts_adapter_config="(1,32,4_2,48)")
    model = random_speech_lm(cfg, seed=3)
    rows, labels = RowLayout(IDS, K, P).sequence(PROMPT, _utterance())
    batch = {"rows": rows[None], "labels": labels[None], "rows_lengths": torch.tensor([rows.shape[0]])}
    with torch.no_grad():
        official, n = SpeechLMObjective(model)(batch)
        obj = SpeechLMObjective(model, text_weight=0.25)
        weighted, n2 = obj(batch)
    text, speech = obj.last["loss_text"], obj.last["loss_speech"]
    assert n == n2 > 0 and text > 0 and speech > 0
    assert abs(float(official / n) - (text + speech)) < 1e-4  # 1.0: CE_text + CE_speech, as the official
    assert abs(float(weighted / n) - (0.25 * text + speech)) < 1e-4


def test_bad_chunks_are_refused():
    layout = RowLayout(IDS, K, P)
    with pytest.raises(LayoutError, match="control id"):
        layout.chunk_rows([1, IDS.audio_sep], [1, 2, 3, 4], last=True)
    with pytest.raises(LayoutError, match="codes in"):
        layout.chunk_rows([1], [IDS.speech_eos], last=True)
    with pytest.raises(LayoutError, match="silence filler"):
        layout.chunk_rows([1, 2, 3, 4, 5], [1, 2], last=True)  # 5 text ids, P + 1 = 3 speech rows
    rows = layout.chunk_rows([1, 2, 3, 4, 5], [1, 2], last=True, filler=SILENCE)
    assert len(rows) == 5 + 3 and rows[4][1:] == [SILENCE] * K and rows[5] == layout.close_row()
    with pytest.raises(LayoutError, match="assistant <|audio_start|>"):
        layout.sequence(PROMPT[:2], _utterance())
    assert layout.speech_block([7, 8], [1, 2, 3, 4, 5]) == [[7, 39, 39], [8, 39, 39], [20, 1, 2], [20, 3, 4],
                                                            [20, 38, 38]]
