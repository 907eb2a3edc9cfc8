"""3-D mRoPE positions: transformers' ``Qwen2_5_VLModel.get_rope_index`` as an oracle where the layouts
coincide, an independent per-token reference of the official MGM splice everywhere, and bad input."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.generation.mllm.positions import (
    IMAGE_PLACEHOLDER,
    SPEECH_PLACEHOLDER,
    PositionError,
    decode_positions,
    mrope_positions,
    spans_from_placeholders,
    vision_token_count,
)

TOKENS_PER_SECOND = 2


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("the oracle calls transformers 5's get_rope_index(input_ids, mm_token_type_ids, ...)")
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=152064,
                rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0})
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=16,
                  tokens_per_second=TOKENS_PER_SECOND)
    cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    return transformers.Qwen2_5_VLModel(cfg).eval()


def _hf_positions(model, spans):
    """transformers' positions; audio runs count as text (both get (p, p, p))."""
    types, images, videos = [], [], []
    for s in spans:
        if isinstance(s, int):
            types += [0] * s
        else:
            kind = 1 if s[0] == 1 else 2
            (images if kind == 1 else videos).append(list(s))
            types += [kind] * vision_token_count(s)
    ids = torch.zeros(1, len(types), dtype=torch.long)
    # MGM's video frame groups are plain indices: make upstream's seconds scaling the identity
    second = torch.full((max(1, len(videos)),), 1.0 / TOKENS_PER_SECOND)
    pos, delta = model.get_rope_index(ids, torch.tensor([types]),
                                      image_grid_thw=torch.tensor(images) if images else None,
                                      video_grid_thw=torch.tensor(videos) if videos else None,
                                      second_per_grid_ts=second)
    return pos[:, 0], int(delta)


def _official_reference(spans, merge=2):
    """Token by token, as the official ``prepare_inputs_labels_for_text_image_speech_qwen2vl`` splices."""
    rows, p = [], 0
    for s in spans:
        if isinstance(s, int):
            rows += [(p + i, p + i, p + i) for i in range(s)]
            p += s
        else:
            t, h, w = s[0], s[1] // merge, s[2] // merge
            block = [(p + a, p + b, p + c) for a in range(t) for b in range(h) for c in range(w)]
            rows += block
            p = max(max(r) for r in block) + 1
    pos = torch.tensor(rows).T
    return pos, int(pos.max()) + 1 - pos.shape[1]


# layouts where upstream and MGM agree: every video has fewer frame groups than half its longer side
COINCIDING = [
    [7, (1, 4, 6), 5],
    [3, (1, 8, 2), 2, 9, (2, 6, 4), 4],  # text, image, text, audio, video, text
    [(1, 2, 2), 1],
    [4, (3, 8, 8), (1, 4, 4), 6],  # a video directly followed by an image
]


@pytest.mark.parametrize("spans", COINCIDING)
def test_positions_match_transformers(hf_model, spans):
    ours, delta = mrope_positions(spans)
    ref, ref_delta = _hf_positions(hf_model, spans)
    assert torch.equal(ours, ref)
    assert delta == ref_delta


@pytest.mark.parametrize("spans", COINCIDING + [
    [2, (8, 4, 4), 3],  # 8 frame groups on a 2 x 2 merged grid: upstream diverges here (see below)
    [5, 40, 1],  # text and audio only
    [(16, 2, 2)],
])
def test_positions_match_official_splice(spans):
    ours, delta = mrope_positions(spans)
    ref, ref_delta = _official_reference(spans)
    assert torch.equal(ours, ref)
    assert delta == ref_delta
    assert ours.shape[1] == sum(s if isinstance(s, int) else vision_token_count(s) for s in spans)


def test_long_video_differs_from_transformers_5_as_documented(hf_model):
    # transformers 5.x moves on by max(h, w) / m after a vision block, ignoring the temporal extent; the
    # official MGM code (and transformers 4.52) moves on by the block's max + 1. We follow the official.
    spans = [2, (8, 4, 4), 3]
    ours, _ = mrope_positions(spans)
    ref, _ = _hf_positions(hf_model, spans)
    assert torch.equal(ours[:, :2 + 32], ref[:, :2 + 32])  # identical up to the end of the video
    assert int(ours[0, -3]) == 2 + 8  # next text after frame groups 0..7
    assert int(ref[0, -3]) == 2 + 2


def test_rope_delta_and_decode_positions():
    spans = [3, (1, 4, 6), 2]
    pos, delta = mrope_positions(spans)
    length = pos.shape[1]
    assert delta == int(pos.max()) + 1 - length == (3 + 3 + 2) - (3 + 6 + 2)
    nxt = decode_positions(length, delta)
    assert nxt.shape == (3, 1) and int(nxt[0, 0]) == int(pos.max()) + 1
    more = decode_positions(length, delta, start=4, n=3)
    assert more[1].tolist() == [int(pos.max()) + 5, int(pos.max()) + 6, int(pos.max()) + 7]
    assert torch.equal(more[0], more[2])


def test_spans_from_placeholders():
    ids = [1, 2, IMAGE_PLACEHOLDER, 3, 4, 5, SPEECH_PLACEHOLDER, 6]
    spans = spans_from_placeholders(ids, vision_grids=[(1, 4, 6)], audio_lengths=[10])
    assert spans == [2, (1, 4, 6), 3, 10, 1]
    # one placeholder with several grids: spliced one after the other
    shared = torch.tensor([IMAGE_PLACEHOLDER, 9])
    spans = spans_from_placeholders(shared, vision_grids=[[[1, 2, 2], [2, 4, 4]]])
    assert spans == [(1, 2, 2), (2, 4, 4), 1]
    # the whole pipeline agrees with the per-token reference
    ours, _ = mrope_positions(spans_from_placeholders(ids, [(1, 4, 6)], [10]))
    assert torch.equal(ours, _official_reference([2, (1, 4, 6), 3, 10, 1])[0])


def test_bad_input():
    with pytest.raises(PositionError, match="placeholders"):
        spans_from_placeholders([IMAGE_PLACEHOLDER, 1], vision_grids=[], audio_lengths=[])
    with pytest.raises(PositionError, match="multiples of 2"):
        mrope_positions([3, (1, 3, 4)])
    with pytest.raises(PositionError, match="grid"):
        mrope_positions([(1, 2)])
    with pytest.raises(PositionError, match="negative"):
        mrope_positions([-1])
    with pytest.raises(PositionError, match="empty"):
        mrope_positions([])
