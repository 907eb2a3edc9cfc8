"""CosyVoice2 flow: official checkpoint layout, golden parity, streaming causality, length regulation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from golden import golden_params
from safetensors.torch import load_file

from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.models.flow import CausalFlow, FlowInputError, frame_to_token, regulated_frames
from mgm_omni.models.flow_config import FlowConfig, FlowConfigError

FLOW_MARKER = "flow/flow_outputs.safetensors"
FULL_MARKER = "full_size/flow_full_state_dict_keys.json"
MEL_ATOL = 1e-4  # golden README section 9: flow mel atol ~1e-4 (fp32 vs fp64 of the reference: 3e-6)

# A small random flow for the tests that need no golden data: same structure, narrow widths.
SMALL = FlowConfig(
    input_size=32,
    encoder={
        "output_size": 32,
        "attention_heads": 4,
        "linear_units": 64,
        "num_blocks": 1,
        "num_up_blocks": 1,
    },
    estimator={
        "channels": (16,),
        "attention_head_dim": 8,
        "num_heads": 2,
        "n_blocks": 1,
        "num_mid_blocks": 1,
    },
    noise_frames=400,
)


def _random_inputs(cfg: FlowConfig, n_prompt: int, n_new: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "token": torch.randint(0, cfg.vocab_size, (1, n_new), generator=gen),
        "prompt_token": torch.randint(0, cfg.vocab_size, (1, n_prompt), generator=gen),
        "prompt_feat": torch.randn(1, cfg.token_mel_ratio * n_prompt, cfg.output_size, generator=gen),
        "embedding": torch.randn(1, cfg.spk_embed_dim, generator=gen),
    }


@pytest.fixture(scope="module")
def small_flow() -> CausalFlow:
    torch.manual_seed(0)
    return CausalFlow(SMALL).eval()


# --- official checkpoint layout -------------------------------------------------------------------


@pytest.mark.parametrize("gdir", golden_params(FULL_MARKER))
def test_full_size_state_dict_matches_official_keys(gdir: Path) -> None:
    full = json.loads((gdir / "full_size" / "cosyvoice2_full_config.json").read_text())
    cfg = FlowConfig.from_dict(full)
    assert cfg == FlowConfig()  # the dataclass defaults are the full-size CosyVoice2 flow
    with torch.device("meta"):  # shapes only, no memory
        model = CausalFlow(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = json.loads((gdir / FULL_MARKER).read_text())
    theirs = {e["key"]: e["shape"] for e in ref["keys"]}
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:10]
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert sum(torch.Size(s).numel() for s in ours.values()) == ref["total_numel"]


@pytest.mark.parametrize("gdir", golden_params(FLOW_MARKER))
def test_fixed_noise_matches_reference(gdir: Path) -> None:
    meta = json.loads((gdir / "flow" / "flow_meta.json").read_text())["rand_noise"]
    model = CausalFlow(FlowConfig.from_dict({**SMALL.to_dict(), "noise_frames": meta["shape"][2]}))
    noise = model.decoder.rand_noise
    assert list(noise.shape) == meta["shape"]
    assert hashlib.sha256(noise.numpy().tobytes()).hexdigest() == meta["sha256_float32_bytes"]
    assert "decoder.rand_noise" not in model.state_dict()  # not a checkpoint tensor


def _golden_flow(gdir: Path) -> CausalFlow:
    cfg = FlowConfig.from_dict(json.loads((gdir / "flow" / "flow_config.json").read_text()))
    model = CausalFlow(cfg).eval()
    load_into(model, load_state_dict(gdir / "flow" / "flow.pt"))
    return model


@pytest.mark.parametrize("gdir", golden_params(FLOW_MARKER))
def test_checkpoint_formats_agree(gdir: Path) -> None:
    pt = load_state_dict(gdir / "flow" / "flow.pt")
    st = load_state_dict(gdir / "flow" / "flow.safetensors")
    assert pt.keys() == st.keys() and all(torch.equal(pt[k], st[k]) for k in pt)
    model = _golden_flow(gdir)
    assert all(torch.equal(v, pt[k]) for k, v in model.state_dict().items())


# --- golden parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gdir", golden_params(FLOW_MARKER))
def test_golden_mel_all_modes(gdir: Path) -> None:
    model = _golden_flow(gdir)
    inputs = load_file(str(gdir / "flow" / "flow_inputs.safetensors"))
    outputs = load_file(str(gdir / "flow" / "flow_outputs.safetensors"))
    stages = load_file(str(gdir / "flow" / "flow_intermediates.safetensors"))
    modes = json.loads((gdir / "flow" / "flow_meta.json").read_text())["modes"]
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("encoder_out", o)),
        model.encoder_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("mu", o)),
    ]
    errors = {}
    for tag, mode in modes.items():
        mel = model.inference(
            inputs["token"],
            inputs["prompt_token"],
            inputs["prompt_feat"],
            inputs["embedding"],
            streaming=mode["streaming"],
            finalize=mode["finalize"],
        )
        ref = outputs[f"{tag}.mel"]
        assert mel.shape == ref.shape, tag
        for stage in ("encoder_out", "mu"):  # localise a failure before the ODE amplifies it
            torch.testing.assert_close(captured[stage], stages[f"{tag}.{stage}"], atol=MEL_ATOL, rtol=0)
        errors[tag] = (mel - ref).abs().max().item()
    for h in hooks:
        h.remove()
    print("flow golden max |diff| per mode:", errors)
    assert max(errors.values()) < MEL_ATOL, errors


# --- behaviour without golden data -----------------------------------------------------------------


def test_streaming_is_chunk_causal(small_flow: CausalFlow) -> None:
    # 10 prompt + 40 new tokens: chunks of 25 tokens are [0, 25) [25, 50). Changing tokens from 30 on
    # reaches token 27 at most (3-token look-ahead), i.e. only chunk 1 = frames >= 50.
    inputs = _random_inputs(SMALL, 10, 40)
    changed = dict(inputs, token=inputs["token"].clone())
    changed["token"][:, 20:] = (changed["token"][:, 20:] + 1) % SMALL.vocab_size
    first = small_flow.inference(**inputs, streaming=True)
    second = small_flow.inference(**changed, streaming=True)
    split = 50 - 2 * 10  # first output frame of chunk 1
    torch.testing.assert_close(first[:, :, :split], second[:, :, :split], atol=1e-6, rtol=0)
    assert (first[:, :, split:] - second[:, :, split:]).abs().max() > 1e-3
    offline_a = small_flow.inference(**inputs, streaming=False)
    offline_b = small_flow.inference(**changed, streaming=False)
    assert (
        offline_a[:, :, :split] - offline_b[:, :, :split]
    ).abs().max() > 1e-4  # full attention sees the change


def test_non_final_call_uses_lookahead_only_as_context(small_flow: CausalFlow) -> None:
    inputs = _random_inputs(SMALL, 6, 20)
    mel = small_flow.inference(**inputs, streaming=True, finalize=False)
    assert mel.shape == (1, SMALL.output_size, 2 * (20 - SMALL.pre_lookahead_len))
    # the context tokens change the last frames (look-ahead) but give no frames of their own
    other = dict(inputs, token=inputs["token"].clone())
    other["token"][:, -1] = (other["token"][:, -1] + 7) % SMALL.vocab_size
    assert (small_flow.inference(**other, streaming=True, finalize=False) - mel).abs().max() > 1e-4


def test_length_regulation_matches_standard_path_at_ratio_two(small_flow: CausalFlow) -> None:
    inputs = _random_inputs(SMALL, 8, 24)
    for streaming, finalize in ((False, True), (True, False)):
        n_enc = 24 if finalize else 24 - SMALL.pre_lookahead_len
        standard = small_flow.inference(**inputs, streaming=streaming, finalize=finalize)
        regulated = small_flow.inference(**inputs, streaming=streaming, finalize=finalize, n_frames=2 * n_enc)
        assert torch.equal(standard, regulated)


@pytest.mark.parametrize("frames_per_token", [1.875, 2.5, 1.0])
def test_length_regulation_gives_requested_frames(small_flow: CausalFlow, frames_per_token: float) -> None:
    inputs = _random_inputs(SMALL, 8, 24)
    # the prompt mel may come at the new rate too: 8 prompt tokens over 15 frames
    inputs["prompt_feat"] = inputs["prompt_feat"][:, :15]
    n_frames = regulated_frames(24, frames_per_token)
    mel = small_flow.inference(**inputs, n_frames=n_frames)
    assert mel.shape == (1, SMALL.output_size, n_frames)
    assert torch.isfinite(mel).all() and mel.std() > 0.1


def test_frame_to_token_map() -> None:
    assert frame_to_token(3, 4, 6, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    src = frame_to_token(0, 24, 0, 45)  # 1.875 frames per token: every token gets 1 or 2 frames
    counts = torch.bincount(src, minlength=24)
    assert counts.sum() == 45 and set(counts.tolist()) == {1, 2} and bool((src[1:] >= src[:-1]).all())
    assert regulated_frames(24, 1.875) == 45 and regulated_frames(3, 0.5) == 2


def test_batch_rows_are_independent(small_flow: CausalFlow) -> None:
    a, b = _random_inputs(SMALL, 5, 12, seed=1), _random_inputs(SMALL, 5, 12, seed=2)
    both = small_flow.inference(**{k: torch.cat([a[k], b[k]]) for k in a})
    torch.testing.assert_close(both[1:], small_flow.inference(**b), atol=1e-5, rtol=0)


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.update(token=x["token"][:, :0]), "token is empty"),
        (lambda x: x["token"].__setitem__((0, 3), 6561), r"ids must lie in \[0, 6561\)"),
        (lambda x: x["prompt_token"].__setitem__((0, 0), -1), r"prompt_token ids must lie"),
        (lambda x: x.update(prompt_feat=x["prompt_feat"][:, :-1]), "prompt mel has 11 frames"),
        (lambda x: x.update(token=x["token"].float()), "integer tensor"),
        (lambda x: x.update(embedding=x["embedding"][:, :100]), r"embedding must be \(B, 192\)"),
        (lambda x: x.update(embedding=torch.cat([x["embedding"]] * 2)), "batch sizes differ"),
    ],
)
def test_bad_inputs_raise_clear_errors(small_flow: CausalFlow, change, message: str) -> None:
    inputs = _random_inputs(SMALL, 6, 10)
    change(inputs)
    with pytest.raises(FlowInputError, match=message) as err:
        small_flow.inference(**inputs)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_bad_call_options_raise(small_flow: CausalFlow) -> None:
    inputs = _random_inputs(SMALL, 6, 3)
    with pytest.raises(FlowInputError, match="non-final call needs more than 3"):
        small_flow.inference(**inputs, streaming=True, finalize=False)
    with pytest.raises(FlowInputError, match="n_frames must be a positive int"):
        small_flow.inference(**inputs, n_frames=0)
    with pytest.raises(FlowInputError, match="exceed the fixed noise"):
        small_flow.inference(**inputs, n_frames=SMALL.noise_frames)


def test_config_validation() -> None:
    assert FlowConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(FlowConfigError, match="estimator static_chunk_size 40"):
        FlowConfig(estimator={"static_chunk_size": 40})
    with pytest.raises(FlowConfigError, match="one positive width"):
        FlowConfig(estimator={"channels": (256, 256)})
    with pytest.raises(FlowConfigError, match="input_size 256 must equal encoder output_size 512"):
        FlowConfig(input_size=256)
    with pytest.raises(FlowConfigError, match="not divisible"):
        FlowConfig(input_size=500, encoder={"output_size": 500})
