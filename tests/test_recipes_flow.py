"""Flow-matching recipe on the tiny config: pinned two-step losses, overfitting, the prompt left out of the loss,
an export that inference loads (non-integer frames per unit); the resemblyzer data path behind the slow marker."""

from __future__ import annotations

import json

import pytest
import torch

from mgm_omni.checkpoint import load_into, load_state_dict
from mgm_omni.models.flow import CausalFlow, regulated_frames
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.flow_loss import prior_loss
from mgm_omni.training.config import read_yaml
from mgm_omni.training.flow_data import FlowCollate, write_flow_items
from mgm_omni.training.flow_objective import FlowObjective, FlowTrainConfig
from mgm_omni.training.shards import ShardDataset
from mgm_omni.training.synthetic_corpus import write_synthetic_corpus

from recipe_runner import CONFIGS, losses, one_thread, run

# fp32, one thread, seed 0: loss of steps 1 and 2 (6 clips, one batch, 120-frame windows).
GOLDEN = [29.134611, 28.490299]


class SpeakerStub:
    """A 256-d unit vector per speaker (the synthetic speakers differ in loudness), instead of resemblyzer."""

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(wave16k.abs().mean() * 1e4) % 97)
        return torch.nn.functional.normalize(torch.randn(256, generator=g), dim=0)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    for name, speakers, per in (("six", 2, 3), ("two", 1, 2)):
        write_synthetic_corpus(root / name, speakers=speakers, items_per_speaker=per, longform_per_speaker=0)
        counts = write_flow_items(root / f"{name}_items", [str(root / name / "manifest.jsonl")],
                                  [str(root / name / "units")], ["train"], speaker_encoder=SpeakerStub())
        assert counts["written"] == speakers * per
    return root


def test_two_steps_pinned_and_export_loads_for_inference(items, tmp_path):
    res = run("flow", "flow_tiny", f"data.shards={items / 'six_items'}", f"train.out_dir={tmp_path}")
    assert losses(res) == pytest.approx(GOLDEN, rel=1e-4)
    width = min(120, int(ShardDataset(items / "six_items").lengths.min()))  # windows: the shortest clip
    assert res.history[0]["items"] == 6 and res.history[0]["audio_s"] == pytest.approx(6 * width * 256 / 22050)
    cfg = FlowConfig.from_dict(json.loads((tmp_path / "flow" / "flow_config.json").read_text()))
    flow = CausalFlow(cfg)
    load_into(flow, load_state_dict(tmp_path / "flow" / "flow.safetensors"))
    frames = regulated_frames(10, 22050 / 256 / 25)  # 441/128 frames per unit: 34 for 10 units
    with one_thread():
        mel = flow.inference(torch.arange(10)[None], torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, 80),
                             torch.randn(1, 256), n_frames=frames)
    assert mel.shape == (1, 80, 34) and torch.isfinite(mel).all()


def test_a_run_starts_from_the_weights_of_an_export(items, tmp_path):
    first = run("flow", "flow_tiny", f"data.shards={items / 'six_items'}", f"train.out_dir={tmp_path / 'a'}")
    again = run("flow", "flow_tiny", f"data.shards={items / 'six_items'}", f"train.out_dir={tmp_path / 'b'}",
                f"model.init_from={tmp_path / 'a' / 'flow'}")
    fresh = run("flow", "flow_tiny", f"data.shards={items / 'six_items'}", f"train.out_dir={tmp_path / 'c'}")
    assert losses(again)[0] < losses(first)[0] and losses(fresh) == losses(first)  # started from the trained weights
    cfg = json.loads((tmp_path / "b" / "flow" / "flow_config.json").read_text())
    assert "init_from" not in cfg and FlowConfig.from_dict(cfg) == FlowConfig.from_dict(
        json.loads((tmp_path / "a" / "flow" / "flow_config.json").read_text()))


def test_overfit_two_clips(items, tmp_path):
    res = run("flow", "flow_tiny", f"data.shards={items / 'two_items'}", f"train.out_dir={tmp_path}",
              "train.max_steps=40", "train.lr=1e-2", "objective.segment_frames=80")
    assert losses(res)[-1] < losses(res)[0] / 8, losses(res)[::8]


def test_prompt_frames_condition_but_are_not_learned(items):
    torch.manual_seed(0)
    flow = CausalFlow(FlowConfig.from_dict(read_yaml(CONFIGS / "flow_tiny.yaml", "model")))
    data = ShardDataset(items / "six_items")
    batch = FlowCollate()([data[i] for i in range(3)])
    width = 60
    always = FlowObjective(flow, FlowTrainConfig(segment_frames=width, prompt_prob=1.0, prompt_max_ratio=0.5,
                                                 cfg_rate=0.0))
    never = FlowObjective(flow, FlowTrainConfig(segment_frames=width, prompt_prob=0.0, cfg_rate=0.0))
    with one_thread():
        torch.manual_seed(1)
        _, count_prompted = always(batch)
        torch.manual_seed(1)
        _, count_all = never(batch)
    assert int(count_all) == 3 * width
    assert 3 * width * 0.5 < int(count_prompted) < 3 * width  # prompts of up to half the window are not learned


def test_prior_weight_adds_the_prior_loss_of_mu_on_the_window_mel(items):
    """Same draws with and without the prior: the difference is w x the prior loss of mu (from the objective's
    own encoder path) on the window's mel, averaged over the window frames; off by default."""
    torch.manual_seed(0)
    flow = CausalFlow(FlowConfig.from_dict(read_yaml(CONFIGS / "flow_tiny.yaml", "model")))
    batch = FlowCollate()([ShardDataset(items / "six_items")[i] for i in range(3)])
    assert FlowTrainConfig().prior_weight == 0.0
    kw = dict(segment_frames=60, prompt_prob=1.0, prompt_max_ratio=0.5, cfg_rate=0.0, chunk_causal=True)
    plain, prior = FlowObjective(flow, FlowTrainConfig(**kw)), FlowObjective(flow, FlowTrainConfig(**kw, prior_weight=2.0))
    n_units, n_frames = batch["units_lengths"].tolist(), batch["mel_lengths"].tolist()
    with one_thread(), torch.no_grad():
        torch.manual_seed(3)
        starts = [int(torch.randint(0, f - 60 + 1, ())) for f in n_frames]  # the objective's first draws
        x1 = torch.stack([batch["mel"][i, s:s + 60] for i, s in enumerate(starts)]).transpose(1, 2)
        mu = torch.stack([plain._mu(batch["units"][i], n_units[i], n_frames[i], s, 60)
                          for i, s in enumerate(starts)]).transpose(1, 2)
        expected = float(prior_loss(mu, x1, torch.ones(3, 60)))
        torch.manual_seed(3)
        loss_plain, count = plain(batch)
        torch.manual_seed(3)
        loss_prior, count2 = prior(batch)
    assert int(count) == int(count2) < 3 * 60
    assert expected > 1.0  # an untrained mu is far from the mel
    assert float(loss_prior - loss_plain) / int(count) == pytest.approx(2.0 * expected, rel=1e-4)
    with pytest.raises(ValueError, match="prior_loss"):
        FlowTrainConfig(prior_loss="huber")


@pytest.mark.slow
def test_items_with_resemblyzer_xvectors(items, tmp_path):
    pytest.importorskip("resemblyzer")
    counts = write_flow_items(tmp_path / "items", [str(items / "two" / "manifest.jsonl")],
                              [str(items / "two" / "units")], ["train"])
    assert counts["written"] == 2
    item = ShardDataset(tmp_path / "items")[0]
    assert item["xvector"].shape == (256,) and float(item["xvector"].norm()) == pytest.approx(1.0, abs=1e-3)
    assert item["mel"].shape[1] == 80
    assert item["mel"].shape[0] == pytest.approx(len(item["units"]) * 22050 / 256 / 25, rel=0.05)
