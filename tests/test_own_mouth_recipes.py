"""The own-mouth recipes on tiny parts: the assembly renders its voice with an allowed voice only, and the card
carries the retrain commands and the gate's scores."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from mgm_omni.hub.own_mouth_tiny import write_tiny_parts

    try:
        return write_tiny_parts(tmp_path_factory.mktemp("own") / "parts")
    except Exception as exc:
        if "espeak" in str(exc).lower():
            pytest.skip(f"G2P unavailable: {exc}")
        raise


def _config(tmp_path, parts, **voice):
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"totals": {"en": {"source": 0.1, "vocoder": 0.1, "resynthesis": 0.12, "items": 3,
                                                  "passes": True}}}))
    cfg = {"out": str(tmp_path / "mouth"), "speechlm": str(parts.speechlm), "text": str(parts.text),
           "units": str(parts.units), "flow": str(parts.flow), "ge2e": str(parts.ge2e), "hifigan": str(parts.hifigan),
           "gate_report": str(gate), "voice": {"text": "The birch canoe slid on the smooth planks.", **voice}}
    path = tmp_path / "mouth.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_assembly_renders_an_allowed_voice_and_writes_the_card(tmp_path, parts):
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (apt-get install flite)")
    import mouth_assemble

    root = mouth_assemble.main(["--config", str(_config(tmp_path, parts, engine_voice="flite:rms"))])
    voice = json.loads((root / "voice" / "voice.json").read_text())
    assert voice["description"].startswith("flite:rms reading") and voice["seconds"] > 2
    card = (root / "MODEL_CARD.md").read_text()
    assert "mgm-omni train flow --config recipes/configs/flow_small.yaml" in card
    assert "| en | 0.100 | 0.100 | 0.120 | 3 | pass |" in card
    from mgm_omni.checkpoint.manifest import verify_checksums

    assert verify_checksums(root) > 10


def test_a_voice_reserved_for_evaluation_is_refused(tmp_path, parts):
    import mouth_assemble

    from mgm_omni.data.voices import VoiceError

    with pytest.raises(VoiceError, match="reserved for evaluation"):
        mouth_assemble.main(["--config", str(_config(tmp_path, parts, engine_voice="flite:slt"))])
    assert not (tmp_path / "mouth").exists()


def test_gate_pairs_items_with_a_prompt_of_the_same_speaker(tmp_path):
    import mouth_resynth_gate as gate

    rows = [{"id": f"{spk}-{lang}-{i}", "audio": f"a/{i}.wav", "text": "t", "lang": lang, "speaker": spk,
             "split": split, "duration": dur, "kind": "utterance"}
            for spk, split in (("held", "dev_speakers"), ("seen", "dev"), ("train", "train"))
            for lang in ("en", "zh") for i, dur in enumerate((2.0, 4.0, 20.0, 3.5))]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = gate.GateConfig(units="", flow="", manifests=[str(tmp_path / "m.jsonl")], out="", max_items=3)
    pairs = gate.pick_items(cfg)
    assert [(a["id"], b["id"]) for a, b in pairs if a["lang"] == "en"] == [
        ("held-en-0", "held-en-1"), ("held-en-1", "held-en-3"), ("held-en-3", "held-en-1")]  # 20 s: too long
    assert all(a["speaker"] == b["speaker"] and a["split"] != "train" for a, b in pairs)


def test_unit_means_average_the_frames_of_each_unit(tmp_path):
    import mouth_resynth_gate as gate
    import numpy as np

    from mgm_omni.generation.wave.frame_grid import FrameGrid
    from mgm_omni.training.shards import ShardWriter

    grid = FrameGrid.for_rates(22050, 256, 25.0, 5)
    with ShardWriter(tmp_path / "items", length_field="mel") as w:
        w.add({"units": np.array([0, 1, 0], np.int32), "mel": np.repeat(np.array([[1.0], [5.0], [3.0]], np.float32),
                                                                        [3, 4, 3], axis=0) * np.ones((1, 80), np.float32),
               "xvector": np.zeros(256, np.float32)})
    means = gate.unit_mean_mels(str(tmp_path / "items"), grid, 4)
    assert means.shape == (4, 80) and means[0, 0].item() == 2.0 and means[1, 0].item() == 5.0 and means[2].abs().sum() == 0


def test_gate_mu_is_what_the_flow_solver_is_given_and_overrides_change_inference_only(tmp_path, parts):
    import mouth_resynth_gate as gate
    import torch

    from mgm_omni.generation.wave.frame_grid import FrameGrid
    from mgm_omni.generation.wave.regulated_flow import grid_mel, grid_mu

    flow = gate.load_gate_flow(str(parts.flow), {"n_timesteps": 3, "inference_cfg_rate": 0.0})
    assert (flow.config.n_timesteps, flow.decoder.n_timesteps, flow.decoder.cfg_rate) == (3, 3, 0.0)
    with pytest.raises(SystemExit, match="unknown key"):
        gate.load_gate_flow(str(parts.flow), {"vocab_size": 8})
    grid = FrameGrid.for_rates(22050, 256, 25.0, flow.config.encoder.static_chunk_size)
    gen = torch.Generator().manual_seed(0)
    vocab, n_prompt = flow.config.vocab_size, 7
    prompt = (torch.randint(0, vocab, (1, n_prompt), generator=gen),
              torch.randn(1, grid.frames(n_prompt), 80, generator=gen), torch.randn(1, flow.config.spk_embed_dim))
    tokens = torch.randint(0, vocab, (30,), generator=gen).tolist()
    seen = []
    solver = flow.decoder.forward
    flow.decoder.forward = lambda mu, *a, **k: seen.append(mu.clone()) or solver(mu, *a, **k)
    mel = grid_mel(flow, grid, *prompt, tokens)
    mu = grid_mu(flow, grid, prompt[0], tokens)
    assert mu.shape == mel.shape == (1, 80, grid.frames(37) - grid.frames(7))
    assert torch.equal(mu, seen[0][:, :, grid.frames(7):])


def test_gate_reuses_only_the_flow_free_columns_of_a_report_of_the_same_judge(tmp_path):
    import mouth_resynth_gate as gate

    score = {"hyp": "a", "errors": 1, "words": 4}
    old = {"config": {"judge": "whisper-base", "units": "a.safetensors"}, "items": [
        {"id": "x", "text": "t", "source": score, "vocoder": score, "resynthesis": score, "mu": score,
         "unit_means": score}]}
    (tmp_path / "r.json").write_text(json.dumps(old))
    cfg = gate.GateConfig(units="a.safetensors", flow="", manifests=[], out="", reuse=str(tmp_path / "r.json"))
    assert gate.reused_scores(cfg) == {"x": {"source": score, "vocoder": score, "unit_means": score, "text": "t"}}
    cfg.units = "other.safetensors"  # unit means belong to the units they were made of
    assert gate.reused_scores(cfg) == {"x": {"source": score, "vocoder": score, "text": "t"}}
    cfg.judge = "whisper-small"
    with pytest.raises(SystemExit, match="judged by"):
        gate.reused_scores(cfg)


def test_flow_items_swap_keeps_mels_and_replaces_units(tmp_path):
    import numpy as np
    import flow_items_swap
    from mgm_omni.training.shards import ShardDataset, ShardWriter
    from mgm_omni.training.unit_shards import write_units

    rows = [{"id": f"c{i}", "split": "train" if i != 1 else "dev"} for i in range(4)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = {f"c{i}": np.arange(5 + i, dtype=np.int32) for i in range(4)}
    write_units(tmp_path / "old", list(old), list(old.values()))
    with ShardWriter(tmp_path / "items", length_field="mel") as w:
        for i in (0, 2, 3):  # the train clips, in manifest order
            w.add({"units": old[f"c{i}"], "mel": np.full((3 * (5 + i), 80), i, np.float32),
                   "xvector": np.full(4, i, np.float32)})
    new = {"c0": np.full(5, 7), "c2": np.full(6, 8), "c3": np.full(9, 9)}  # c2 one short, c3 one long
    write_units(tmp_path / "new", list(new), list(new.values()))
    args = ["--items", str(tmp_path / "items"), "--manifest", str(tmp_path / "m.jsonl"), "--old-units",
            str(tmp_path / "old"), "--new-units", str(tmp_path / "new"), "--out", str(tmp_path / "out")]
    flow_items_swap.main(args)
    out = ShardDataset(tmp_path / "out")
    assert [out[k]["units"].tolist() for k in range(3)] == [[7] * 5, [8] * 7, [9] * 8]
    assert [float(out[k]["mel"][0, 0]) for k in range(3)] == [0, 2, 3] and out[2]["mel"].shape == (24, 80)
    write_units(tmp_path / "bad", ["c0", "c2", "c3"], [np.full(3, 1), np.full(7, 1), np.full(8, 1)])
    with pytest.raises(SystemExit, match="c0: 3 new units for 5"):
        flow_items_swap.main(args[:7] + [str(tmp_path / "bad"), "--out", str(tmp_path / "out2")])
