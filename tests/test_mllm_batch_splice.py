"""Batched MLLM splice for training: batched = per-sample (inputs, positions, logits), labels only on replies."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.config import OmniConfig
from mgm_omni.generation.mllm.batch_splice import IGNORE_INDEX, MLLMSample, splice_batch
from mgm_omni.generation.mllm.runner import mrope_positions
from mgm_omni.hub.tiny_brain import random_mgm_omni, tiny_omni_config
from mgm_omni.models.omni_lm import MediaFeatures, OmniInputError
from mgm_omni.text import IMAGE_TOKEN_INDEX, SPEECH_TOKEN_INDEX


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return random_mgm_omni(OmniConfig.from_dict(tiny_omni_config(vocab_size=300, tie=False, audio_width=16)), 3)


def _samples(h: int) -> list[MLLMSample]:
    g = torch.Generator().manual_seed(1)
    audio = MediaFeatures("audio", torch.randn(7, h, generator=g))
    image = MediaFeatures("visual", torch.randn(2 * 2 * 3, h, generator=g), (2, 4, 6))
    return [
        MLLMSample([5, 6, SPEECH_TOKEN_INDEX, 7], [40, 41, 42], [audio]),
        MLLMSample([9, IMAGE_TOKEN_INDEX, 10, 11, SPEECH_TOKEN_INDEX], [50, 51, 52, 53, 54, 55], [image, audio]),
        MLLMSample([1, 2, 3], [60]),
    ]


def test_batched_equals_per_sample(model):
    samples = _samples(model.cfg.hidden_size)
    batch = splice_batch(model, samples)
    assert batch.embeds.shape[:2] == batch.labels.shape == batch.attention_mask.shape == (3, 28)
    assert batch.lengths == [13, 28, 4]
    with torch.no_grad():
        logits = model(batch.embeds, batch.positions, pad_mask=batch.attention_mask)
    for i, s in enumerate(samples):
        single = splice_batch(model, [s])
        embeds, spans = model.splice(list(s.prompt_ids) + list(s.target_ids), s.media)
        positions, delta = mrope_positions(spans, embeds.shape[1])
        assert torch.equal(single.embeds, embeds) and torch.equal(single.positions, positions)  # B = 1: unpadded
        n = embeds.shape[1]
        assert torch.equal(batch.embeds[i, :n], embeds[0]) and torch.equal(batch.positions[:, i, :n], positions[:, 0])
        assert batch.rope_deltas[i] == delta and batch.spans[i] == spans
        assert not batch.attention_mask[i, n:].any() and (batch.positions[:, i, n:] == 1).all()
        with torch.no_grad():
            alone = model(embeds, positions)
        assert torch.allclose(logits[i, :n], alone[0], atol=1e-4), i  # padding changes nothing
        labels = batch.labels[i]
        assert labels[n - len(s.target_ids):n].tolist() == list(s.target_ids)
        assert (labels[: n - len(s.target_ids)] == IGNORE_INDEX).all() and (labels[n:] == IGNORE_INDEX).all()


def test_gradients_reach_media_features(model):
    h = model.cfg.hidden_size
    feats = torch.randn(7, h, requires_grad=True)
    batch = splice_batch(model, [MLLMSample([5, SPEECH_TOKEN_INDEX], [40, 41], [MediaFeatures("audio", feats)]),
                                 MLLMSample([1], [2])])
    logits = model(batch.embeds, batch.positions, pad_mask=batch.attention_mask)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten(),
                                             ignore_index=IGNORE_INDEX)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


@pytest.mark.parametrize("samples,match", [
    ([], "empty"),
    ([MLLMSample([1, 2], [])], "target is empty"),
    ([MLLMSample([1, 2], [SPEECH_TOKEN_INDEX])], "outside the vocabulary"),
    ([MLLMSample([1, SPEECH_TOKEN_INDEX], [3])], "sample 0: the prompt has 1 <speech>"),
])
def test_bad_samples_are_clear_errors(model, samples, match):
    with pytest.raises(OmniInputError, match=match):
        splice_batch(model, samples)
    with pytest.raises(OmniInputError, match="max_length"):
        splice_batch(model, [MLLMSample([1, 2, 3], [4, 5])], max_length=4)
