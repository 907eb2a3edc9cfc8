"""Information-mining projector: golden parity with the official ``DualMLPSpeechProjector`` and a
from-formula oracle, config wiring from ``OmniConfig``, and bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from golden import golden_params

from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.config import ConfigError, OmniConfig
from mgm_omni.models.projector import DualMLPSpeechProjector, ProjectorInputError, SpeechProjectorConfig

PREFIX = "model.mm_speech_projector."


def _golden_projector(gdir, speech_norm: bool = False) -> DualMLPSpeechProjector:
    """The official projector from its config (``projector_golden.json``) and its bf16 weights."""
    meta = json.loads((gdir / "projector_golden.json").read_text())["config"]
    state = load_state_dict(gdir / "dual_mlp_projector.safetensors")
    assert all(k.startswith(PREFIX) for k in state)  # the official checkpoint key prefix
    state = {k[len(PREFIX):]: v.float() for k, v in state.items()}  # bf16 weights, fp32 compute
    main_dim = state["dual_query.0.weight"].shape[0]  # hard-coded 1280 upstream; read, not assumed
    cfg = SpeechProjectorConfig(main_dim=main_dim, aux_dim=meta["speech_encoder_hidden_size"] - main_dim,
                                ds_rate=meta["speech_encoder_ds_rate"], out_dim=meta["hidden_size"],
                                mlp_dim=state["linear1.weight"].shape[0], speech_norm=speech_norm,
                                projector_type=meta["mm_speech_projector_type"])
    proj = DualMLPSpeechProjector(cfg)
    load_into(proj, state)  # strict: the aux width from the config must fit the weights
    return proj.eval()


@pytest.mark.parametrize("gdir", golden_params("projector/projector_golden.npz"))
def test_projector_matches_official_golden(gdir):
    gdir = gdir / "projector"
    data = np.load(gdir / "projector_golden.npz")
    shapes = json.loads((gdir / "projector_golden.json").read_text()).get("shapes", {})
    for key, shape in shapes.items():  # the json's record of the arrays agrees with the arrays
        assert list(data[key].shape) == shape, key
    x_main, x_aux = torch.from_numpy(data["x_main"]), torch.from_numpy(data["x_aux"])
    with torch.no_grad():
        proj = _golden_projector(gdir)
        out = proj(x_main, x_aux)
        out_norm = _golden_projector(gdir, speech_norm=True)(x_main, x_aux)
    ref = torch.from_numpy(data["out"])
    n, t, _ = x_main.shape  # trailing frames that do not fill a group of ds_rate are dropped
    assert out.shape == ref.shape == (n, t // proj.cfg.ds_rate, proj.cfg.out_dim)
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, scale)
    torch.testing.assert_close(out_norm, torch.from_numpy(data["out_l2norm"]), atol=1e-5, rtol=0)
    flat = torch.from_numpy(data["out_flat"])
    torch.testing.assert_close(out.flatten(0, 1), flat, atol=1e-5 * max(1.0, scale), rtol=0)


def _formula(proj: DualMLPSpeechProjector, x_main: torch.Tensor, x_aux: torch.Tensor) -> torch.Tensor:
    """Per-frame loop written straight from the spec's formula (independent of the batched code)."""
    cfg = proj.cfg
    b, t, d = x_main.shape
    fused = torch.empty_like(x_main)
    for i in range(b):
        for j in range(t):
            aux = x_aux[i, 2 * j:2 * j + 2]  # the 2 time-aligned aux frames of main frame j
            q = proj.dual_query(x_main[i, j])
            weights = torch.softmax(proj.dual_aux(aux) @ q / d**0.5, dim=0)  # (2,)
            fused[i, j] = x_main[i, j] + weights @ proj.dual_val(aux)
    n = t // cfg.ds_rate
    stacked = fused[:, : n * cfg.ds_rate].reshape(b, n, cfg.ds_rate * d)
    out = proj.linear2(torch.relu(proj.linear1(stacked)))
    return F.normalize(out, dim=-1) if cfg.speech_norm else out


@pytest.mark.parametrize("k, t, norm", [(5, 750 // 50, False), (4, 18, True), (1, 3, False)])
def test_projector_matches_formula(k, t, norm):
    torch.manual_seed(k)
    cfg = SpeechProjectorConfig(main_dim=32, aux_dim=24, ds_rate=k, out_dim=48, mlp_dim=40, speech_norm=norm)
    proj = DualMLPSpeechProjector(cfg).eval()
    x_main, x_aux = torch.randn(2, t, 32), torch.randn(2, 2 * t, 24)
    with torch.no_grad():
        got, ref = proj(x_main, x_aux), _formula(proj, x_main, x_aux)
    assert got.shape == (2, t // k, 48)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if norm:
        torch.testing.assert_close(got.norm(dim=-1), torch.ones(2, t // k))


def test_projector_config_from_omni_config():
    cfg = SpeechProjectorConfig.from_omni(OmniConfig(speech_encoder_ds_rate=4, speech_norm=True))
    got = (cfg.main_dim, cfg.aux_dim, cfg.ds_rate, cfg.out_dim, cfg.speech_norm)
    assert got == (1280, 1280, 4, 3584, True)
    proj = DualMLPSpeechProjector(cfg)
    names = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    assert names["dual_query.0.weight"] == (1280,) and names["dual_val.1.weight"] == (1280, 1280)
    assert names["linear1.weight"] == (2048, 5120) and names["linear2.weight"] == (3584, 2048)
    assert cfg.tokens_for(750) == 187  # 2 trailing frames dropped per window


@pytest.mark.parametrize("bad, match", [
    (dict(projector_type="dual_mlp_type2"), "not supported"),
    (dict(projector_type="linear"), "not supported"),
    (dict(ds_rate=0), "ds_rate"),
    (dict(out_dim=2.5), "out_dim"),
])
def test_projector_config_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        SpeechProjectorConfig(**bad)


@pytest.mark.parametrize("main, aux, match", [
    ((2, 10, 32), (2, 20, 16), "widths"),  # aux width wrong
    ((2, 10, 32), (2, 15, 24), "whole number"),  # aux frames not a multiple of main frames
    ((2, 3, 32), (2, 6, 24), ">= 5 main frames"),
    ((10, 32), (20, 24), r"\(B, T, D\)"),
    ((1, 10, 32), (2, 20, 24), "same B"),
])
def test_projector_rejects_bad_inputs(main, aux, match):
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=32, aux_dim=24, ds_rate=5, out_dim=8,
                                                        mlp_dim=8))
    with pytest.raises(ProjectorInputError, match=match):
        proj(torch.zeros(main), torch.zeros(aux))
