"""The guided-attention training aid: chunks are found where the layout put them, the attention it guides is
the layer's real attention, training on it moves attention into the band, and weight 0 is the official loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mgm_omni.config import SpeechLMConfig
from mgm_omni.generation.speech.layout import RowLayout
from mgm_omni.models.speech_lm import random_speech_lm
from mgm_omni.training.speechlm_guide import GuideConfig, chunk_bands, guide_loss
from mgm_omni.training.speechlm_objective import SpeechLMObjective
from tests.test_row_layout import IDS, K, P, PROMPT, _utterance

CFG = SpeechLMConfig(vocab_size=50 + K * 40, tokenizer_text_size=50, tokenizer_speech_size=40,
                     speech_token_count=K, speech_token_pre_pad=P, hidden_size=32, intermediate_size=48,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                     tts_adapter_config="(1,32,4_2,48)")


def _batch(seeds=(0, 1)):
    seqs = [RowLayout(IDS, K, P).sequence(PROMPT, _utterance(seed=s)) for s in seeds]
    t = max(r.shape[0] for r, _ in seqs)
    rows = torch.full((len(seqs), t, 1 + K), IDS.pad_text)
    labels = torch.full((len(seqs), t, 1 + K), -100)
    for i, (r, lab) in enumerate(seqs):
        rows[i, : r.shape[0]], labels[i, : r.shape[0]] = r, lab
    return {"rows": rows, "labels": labels, "rows_lengths": torch.tensor([r.shape[0] for r, _ in seqs])}, seqs


def test_chunks_are_found_where_the_layout_put_them():
    batch, _ = _batch()
    layout = RowLayout(IDS, K, P)
    bands = chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"], CFG)
    chunks = _utterance(seed=1)
    mine = [b for b in bands if b.batch == 1]
    assert len(mine) == len(chunks) and len(bands) == 2 * len(chunks)
    start = len(PROMPT)
    for band, (text, units) in zip(mine, chunks):
        assert band.text_start == start and band.n_text == len(text)
        g = -(-len(units) // K)
        assert band.unit_rows.tolist() == list(range(start + P, start + P + g))
        start += len(layout.chunk_rows(text, units, last=False))



@pytest.mark.parametrize("aligned", [False, True])
def test_guided_attention_is_the_layers_own_attention(aligned):
    model = random_speech_lm(CFG, seed=0).eval()
    batch, _ = _batch((0,))
    attn = model.model.layers[1].self_attn
    attn.capture = []
    with torch.no_grad():
        model(batch["rows"])
    q, k = attn.capture[0]
    attn.capture = None
    t = q.shape[2]
    # the real attention probabilities: SDPA with the identity as values returns them
    eye = torch.eye(t)[None, None].expand(1, k.shape[1], t, t)
    probs = F.scaled_dot_product_attention(q, k, eye, is_causal=True, enable_gqa=True)[0]  # (H, T, T)
    bands = chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"], CFG)
    centres = [torch.randint(0, b.n_text, (len(b.unit_rows),), generator=torch.Generator().manual_seed(i))
               for i, b in enumerate(bands)]
    if aligned:  # a forced alignment: the text index of every unit row, chunks in order
        align = torch.cat(centres)[None, :, None]  # no phonemes: the text index column alone
        bands = chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"], CFG, align,
                            torch.tensor([align.shape[1]]))
        assert all(torch.equal(b.centre, c) for b, c in zip(bands, centres))
        # a count that does not match the sequence's unit rows: the linear band
        assert all(b.centre is None for b in chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"],
                                                         CFG, align, torch.tensor([align.shape[1] - 1])))
    cfg = GuideConfig(weight=1.0, layer=1, heads=3, sigma=0.3, min_sigma=1.0, align_sigma=0.7)
    expected, count = 0.0, 0
    for band, aligned_centre in zip(bands, centres):
        g = len(band.unit_rows)
        for h in range(3):
            for i, row in enumerate(band.unit_rows.tolist()):
                centre = float(aligned_centre[i]) if aligned else band.n_text * (i + 0.5) / g
                sigma = 0.7 if aligned else max(1.0, 0.3 * band.n_text)
                mass = sum(float(probs[h, row - 1, band.text_start + j]) * torch.exp(
                    torch.tensor(-0.5 * ((j - centre) / sigma) ** 2)).item()
                    for j in range(band.n_text) if band.text_start + j <= row - 1)
                expected -= torch.log(torch.tensor(mass + 1e-4)).item()
                count += 1
    assert abs(float(guide_loss(q, k, bands, cfg)) - expected / count) < 1e-4


def _train(obj: SpeechLMObjective, batch: dict, metric: str, steps: int = 40) -> list[float]:
    """``steps`` Adam steps of the whole objective (its training-only heads too) on one batch; ``metric`` each."""
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    history = []
    for _ in range(steps):
        loss, n = obj(batch)
        history.append(obj.last[metric])
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    return history


def test_training_on_the_guide_moves_attention_into_the_band():
    torch.manual_seed(0)
    model = random_speech_lm(CFG, seed=1)
    batch, _ = _batch()
    guide = GuideConfig(weight=1.0, layer=1, heads=2, sigma=0.2, min_sigma=1.0)
    obj = SpeechLMObjective(model, guide=guide)
    history = _train(obj, batch, "loss_guide")
    assert history[-1] < 0.6 * history[0]
    assert model.model.layers[1].self_attn.capture is None  # the capture is dropped after each forward


def test_weight_zero_is_the_official_loss_and_the_guide_adds_its_term():
    model = random_speech_lm(CFG, seed=2)
    batch, _ = _batch()
    with torch.no_grad():
        official, n = SpeechLMObjective(model)(batch)
        off = SpeechLMObjective(model, guide=GuideConfig(weight=0.0))
        same, _ = off(batch)
        on = SpeechLMObjective(model, guide=GuideConfig(weight=0.5, layer=0, heads=1))
        guided, _ = on(batch)
    assert torch.equal(official, same) and "loss_guide" not in off.last
    assert abs(float(guided / n) - float(official / n) - 0.5 * on.last["loss_guide"]) < 1e-4
    with pytest.raises(ValueError, match="guide"):
        SpeechLMObjective(model, guide=GuideConfig(weight=1.0, layer=5))


def _aligned_batch(seeds=(0, 1)):
    """``_batch`` plus an ``align`` field: per unit row a text index and made-up phonemes (1..5) of its units."""
    batch, seqs = _batch(seeds)
    bands = chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"], CFG)
    per_seq = [sum(len(b.unit_rows) for b in bands if b.batch == i) for i in range(len(seqs))]
    align = torch.full((len(seqs), max(per_seq), 1 + K), -1)
    for i, n in enumerate(per_seq):
        rows = torch.arange(n)
        align[i, :n, 0] = rows % 3
        align[i, :n, 1:] = 1 + (rows[:, None] * 3 + torch.arange(K)[None] + i) % 5
    return {**batch, "align": align, "align_lengths": torch.tensor(per_seq)}


def test_the_phoneme_aid_learns_and_stays_out_of_the_exported_model():
    torch.manual_seed(0)
    model = random_speech_lm(CFG, seed=3)
    batch = _aligned_batch()
    obj = SpeechLMObjective(model, guide=GuideConfig(phone_weight=1.0, phone_classes=6))
    assert obj.phone_head is not None and obj.guide is not None
    history = _train(obj, batch, "loss_phone")
    assert "loss_guide" not in obj.last  # attention weight 0: no attention capture
    # from about log 6 (a random head) to well under log 5 (the best a head blind to the rows could do)
    assert history[0] > 1.5 and history[-1] < 0.7 * math.log(5)
    assert all(not k.startswith("model.") for k in obj.state_dict() if "phone_head" in k)
    assert not any("phone" in k for k in model.state_dict())
    # a batch without aligned phonemes adds nothing
    plain, _ = _batch()
    with torch.no_grad():
        total, rows = obj(plain)
        official, _ = SpeechLMObjective(model)(plain)
    assert obj.last["loss_phone"] == 0.0 and torch.allclose(total, official)
    with pytest.raises(ValueError, match="phone_classes"):
        SpeechLMObjective(model, guide=GuideConfig(phone_weight=1.0))
