"""The FSQ unit tokenizer: ids and values agree, every id is reachable, and the state rebuilds the same units."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.models.unit_tokenizer import FSQ, UnitTokenizerConfig, UnitTokenizerError, WhisperUnitTokenizer


def test_fsq_ids_are_mixed_radix_steps_and_codes_invert_them():
    fsq = FSQ([8, 5, 3])
    assert fsq.size == 120
    z = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    values, ids = fsq(z)
    assert ids.min() >= 0 and ids.max() < 120
    assert len(ids.unique()) == 120  # wide inputs reach every unit
    torch.testing.assert_close(fsq.codes(ids), values)
    # each dimension takes exactly levels[i] values in [-1, 1]
    for i, n in enumerate([8, 5, 3]):
        assert len(values[:, i].unique()) == n and values[:, i].abs().max() <= 1
    # dimension 0 is the least significant digit
    one = fsq.codes(torch.tensor([1]))[0]
    zero = fsq.codes(torch.tensor([0]))[0]
    assert (one - zero)[0] > 0 and torch.equal((one - zero)[1:], torch.zeros(2))


def test_fsq_passes_gradients_straight_through():
    z = torch.randn(10, 3, requires_grad=True)
    FSQ([8, 8, 8])(z)[0].sum().backward()
    assert z.grad is not None and bool((z.grad > 0).all())


def test_fsq_tokenizer_state_round_trip_keeps_units():
    cfg = UnitTokenizerConfig(d_model=32, heads=2, ffn=64, layer=1, num_units=64)
    torch.manual_seed(0)
    tok = WhisperUnitTokenizer(cfg, [4, 4, 4], fsq_hidden=16, fsq_blocks=2)
    for p in tok.parameters():
        torch.nn.init.normal_(p, 0, 0.2)
    wave = torch.randn(16000, generator=torch.Generator().manual_seed(1)) * 0.1
    units = tok(wave)
    assert units.shape == (25,) and units.dtype == torch.int64 and int(units.max()) < 64
    again = WhisperUnitTokenizer.from_state(tok.unit_state())
    assert again.fsq is not None and len(again.fsq.convs) == 2
    assert torch.equal(again(wave), units)


def test_fsq_levels_must_match_the_unit_count():
    cfg = UnitTokenizerConfig(d_model=32, heads=2, ffn=64, layer=1, num_units=512)
    with pytest.raises(UnitTokenizerError, match="give 64 units"):
        WhisperUnitTokenizer(cfg, [4, 4, 4])
    with pytest.raises(UnitTokenizerError, match=">= 2"):
        FSQ([8, 1])


def _toy_clips(n, gen, table):
    """Features that are a phoneme's embedding plus noise, 2-4 frames per phoneme; targets the phonemes."""
    clips = []
    for _ in range(n):
        phones = torch.randint(1, 6, (8,), generator=gen).tolist()
        phones = [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]]
        frames = [table[p] for p in phones for _ in range(int(torch.randint(2, 5, (1,), generator=gen)))]
        clips.append((torch.stack(frames) + 0.3 * torch.randn(len(frames), 32, generator=gen), phones))
    return clips


def test_fsq_units_learn_to_carry_the_phonemes_through_ctc():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
    from mouth_unit_probe import edit_distance, greedy
    from speech_tokenizer_fsq import Trainer

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = UnitTokenizerConfig(d_model=32, heads=2, ffn=64, layer=1, num_units=64)
    model = Trainer(WhisperUnitTokenizer(cfg, [4, 4, 4], fsq_hidden=32, fsq_blocks=1), n_phones=5, dim=32)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.startswith("tok.encoder")], lr=1e-2)
    table = torch.randn(6, 32, generator=gen) * 2
    train, test = _toy_clips(64, gen, table), _toy_clips(16, gen, table)

    def per():
        with torch.no_grad():
            errors = sum(edit_distance(greedy(model(x[None])[0][0], 2 * len(x)), p) for x, p in test)
        return errors / sum(len(p) for _, p in test)

    before = per()
    for step in range(400):
        batch = train[(step * 8) % 64:(step * 8) % 64 + 8]
        x = torch.nn.utils.rnn.pad_sequence([c[0] for c in batch], batch_first=True)
        lens = torch.tensor([len(c[0]) for c in batch])
        logp, _, ids, bound, _ = model(x)
        loss = ctc(logp.transpose(0, 1), torch.tensor([p for c in batch for p in c[1]]), 2 * lens,
                   torch.tensor([len(c[1]) for c in batch])) + bound
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.5 and per() < 0.2  # the phonemes pass through the 64 units
