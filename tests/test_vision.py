"""Qwen2.5-VL vision tower: parity with transformers' ``Qwen2_5_VisionTransformerPretrainedModel``
(test-only oracle, random weights, fp32), window attention really exercised, packing vs one-by-one,
key prefixes, config."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.checkpoint import CheckpointError, load_into
from mgm_omni.config import ConfigError, OmniConfig
from mgm_omni.models.vision import (
    VisionConfig,
    VisionInputError,
    VisionTower,
    vision_layout,
    vision_state_from,
)

# depth 4 with full attention at 1 and 3; 56 px windows = 2 x 2 merge blocks = 4 x 4 patches
TINY = dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=2, in_channels=3, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1, 3],
            out_hidden_size=24, hidden_act="silu")
# an image with partial windows on both edges, a two-group video, a one-window image
GRIDS = torch.tensor([[1, 10, 14], [2, 6, 8], [1, 4, 4]])


def _patches(grid, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(int(torch.as_tensor(grid).prod(-1).sum()), 3 * 2 * 14 * 14, generator=g)


@pytest.fixture(scope="module")
def towers():
    hf_mod = pytest.importorskip("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")
    hf_cfg_mod = pytest.importorskip("transformers.models.qwen2_5_vl.configuration_qwen2_5_vl")
    torch.manual_seed(0)
    hf_cfg = hf_cfg_mod.Qwen2_5_VLVisionConfig(**TINY)
    hf_cfg._attn_implementation = "eager"
    hf = hf_mod.Qwen2_5_VisionTransformerPretrainedModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # the default init leaves norms at 1 and biases at 0: randomise all
            p.normal_(0.0, 0.2)
    ours = VisionTower(VisionConfig.from_dict(TINY)).eval()
    load_into(ours, hf.state_dict())  # upstream names load directly
    return hf, ours


def test_matches_transformers_vision_model(towers):
    hf, ours = towers
    x = _patches(GRIDS)
    with torch.no_grad():
        ref = hf(x, grid_thw=GRIDS)
        ref = getattr(ref, "pooler_output", ref)  # transformers 4.x returns the merged tokens directly
        out = ours(x, GRIDS)
    assert out.shape == (x.shape[0] // 4, 24)
    err = (out - ref).abs().max().item()
    assert err < 1e-4, err


def test_window_attention_is_exercised(towers):
    _, ours = towers
    layout = vision_layout(GRIDS[:1], ours.cfg)
    # 10 x 14 patches = 5 x 7 merge blocks -> 3 x 4 windows of up to 2 x 2 blocks (16 patches)
    sizes = torch.tensor(layout.window_bounds).diff().tolist()
    assert len(sizes) == 12 and sum(sizes) == 140 and max(sizes) == 16 and min(sizes) == 4
    assert layout.frame_bounds == [0, 140]
    # making every block full-attention changes the result, so the windows matter
    full = VisionTower(ours.cfg.replace(fullatt_block_indexes=(0, 1, 2, 3))).eval()
    full.load_state_dict(ours.state_dict())
    x = _patches(GRIDS[:1], seed=1)
    with torch.no_grad():
        assert (full(x, GRIDS[:1]) - ours(x, GRIDS[:1])).abs().max() > 1e-3


def test_packed_equals_one_by_one(towers):
    _, ours = towers
    x = _patches(GRIDS, seed=2)
    with torch.no_grad():
        packed = ours(x, GRIDS)
        parts, start = [], 0
        for grid in GRIDS:
            n = int(grid.prod())
            parts.append(ours(x[start:start + n], grid[None]))
            start += n
    assert torch.allclose(packed, torch.cat(parts), atol=1e-5)


def test_video_frames_attend_separately(towers):
    # full attention is per frame group: a video of two groups equals its two groups encoded apart
    _, ours = towers
    x = _patches([[2, 6, 8]], seed=3)
    with torch.no_grad():
        both = ours(x, torch.tensor([[2, 6, 8]]))
        apart = ours(x, torch.tensor([[1, 6, 8], [1, 6, 8]]))
    assert torch.allclose(both, apart, atol=1e-5)


def test_checkpoint_prefixes(towers):
    hf, _ = towers
    tower_state = hf.state_dict()
    for prefix in ("model.vision_tower.vision_tower.", "model.visual.", "visual."):
        state = {prefix + k: v for k, v in tower_state.items()}
        state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(2, 2)  # the LLM is left out
        state["model.speech_tower.speech_tower.conv1.weight"] = torch.zeros(2)
        picked = vision_state_from(state)
        assert set(picked) == set(tower_state)
        load_into(VisionTower(VisionConfig.from_dict(TINY)), picked)
    with pytest.raises(CheckpointError, match="no vision tower"):
        vision_state_from({"model.embed_tokens.weight": torch.zeros(1)})


def test_config_from_released_json_round_trips():
    released = {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
                "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
                "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "temporal_patch_size": 2}
    cfg = VisionConfig.from_dict(released)
    assert cfg.in_channels == 3 and cfg.fullatt_block_indexes == (7, 15, 23, 31) and cfg.head_dim == 80
    assert cfg.to_dict() == released
    omni = OmniConfig(vision_config=released, hidden_size=3584)
    assert VisionConfig.from_omni(omni).out_hidden_size == 3584
    with pytest.raises(ConfigError, match="out_hidden_size"):
        VisionConfig.from_omni(OmniConfig(vision_config=released, hidden_size=3072, num_attention_heads=16,
                                          num_key_value_heads=4))
    with pytest.raises(ConfigError, match="no vision_config"):
        VisionConfig.from_omni(OmniConfig())


@pytest.mark.parametrize("bad, match", [
    ({"window_size": 50}, "multiple"),
    ({"fullatt_block_indexes": [4]}, "fullatt"),
    ({"num_heads": 3}, "head_dim"),
    ({"hidden_act": "relu"}, "hidden_act"),
    ({"depth": 0}, "positive"),
])
def test_bad_config(bad, match):
    with pytest.raises(ConfigError, match=match):
        VisionConfig.from_dict({**TINY, **bad})


def test_bad_input(towers):
    _, ours = towers
    x = _patches([[1, 4, 4]])
    with pytest.raises(VisionInputError, match="holds 32 patches"):
        ours(x, torch.tensor([[2, 4, 4]]))
    with pytest.raises(VisionInputError, match="multiples of 2"):
        ours(_patches([[1, 3, 4]]), torch.tensor([[1, 3, 4]]))
    with pytest.raises(VisionInputError, match=r"\(N, 1176\)"):
        ours(x[:, :100], torch.tensor([[1, 4, 4]]))
    with pytest.raises(VisionInputError, match="positive"):
        ours(x[:0], torch.zeros(0, 3))
