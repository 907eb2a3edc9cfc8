"""MLLM stage 1 (projector + alignment loss) and stage 2 (LoRA) recipes on the tiny config: pinned two-step
losses, overfitting, what trains, an export with merged LoRA that gives the trained model's logits; the
soft-DTW alignment loss against its recursion and LoRA against plain linear layers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mgm_omni.generation.mllm.batch_splice import MLLMSample, splice_batch
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni
from mgm_omni.training.align_loss import AlignConfig, alignment_loss, soft_dtw
from mgm_omni.training.config import from_dict, read_yaml
from mgm_omni.training.distributed import DistInfo
from mgm_omni.training.lora import LoRALinear, apply_lora, merge_lora
from mgm_omni.training.mllm_data import collate_lists, sequence_lengths
from mgm_omni.training.mllm_setup import MLLMDataSection, MLLMModelSection, build_mllm, prepare_items
from mgm_omni.training.shards import ShardDataset
from mgm_omni.training.speechlm_rows import read_jsonl
from mgm_omni.training.synthetic_corpus import write_char_tokenizer, write_synthetic_corpus

from recipe_runner import CONFIGS, final_weights, losses, one_thread, run

# fp32, one thread, seed 0: loss of steps 1 and 2 (10 items: 6 utterances, 2 long-form, 2 chat turns; one batch).
GOLDEN_STAGE1 = [17.116979, 14.903728]  # CE + 0.5 x soft-DTW alignment
GOLDEN_STAGE2 = [15.784075, 13.436571]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mllm")
    write_char_tokenizer(root / "tok")
    write_synthetic_corpus(root / "eight", speakers=2, items_per_speaker=3, longform_per_speaker=1)
    write_synthetic_corpus(root / "two", speakers=1, items_per_speaker=2, longform_per_speaker=0)
    # stage 2 mixes instruction turns, one of them text-only
    (root / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"audio": "eight/audio/spk0-000.wav", "prompt": "What is said?", "response": "Words."},
        {"audio": None, "prompt": "Say hi.", "response": "Hi."},
    ]) + "\n")
    model_section = from_dict(MLLMModelSection, read_yaml(CONFIGS / "mllm_stage1_tiny.yaml", "model"))
    _, tower = build_mllm(model_section)
    for name, extra in (("two", []), ("eight", [str(root / "chat.jsonl")])):
        section = MLLMDataSection(items=str(root / f"{name}_items"), manifests=[str(root / name / "manifest.jsonl")],
                                  instructions=extra, tokenizer=str(root / "tok"), feature_dtype="float32")
        with one_thread():
            prepare_items(section, model_section, tower, DistInfo())
    return root


def test_stage1_two_steps_pinned_only_the_projector_moves(data, tmp_path):
    res = run("mllm_stage1", "mllm_stage1_tiny", f"data.items={data / 'eight_items'}", f"train.out_dir={tmp_path}")
    assert losses(res) == pytest.approx(GOLDEN_STAGE1, rel=1e-4)
    rows = read_jsonl(data / "eight" / "manifest.jsonl")
    seconds = sum(r["duration"] for r in rows) + rows[0]["duration"]  # + the chat turn about spk0-000
    assert res.history[0]["loss_align"] > 0 and res.history[0]["audio_s"] == pytest.approx(seconds, rel=1e-5)
    init, _ = build_mllm(from_dict(MLLMModelSection, read_yaml(CONFIGS / "mllm_stage1_tiny.yaml", "model")))
    before, after = init.state_dict(), res.model.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("model.mm_speech_projector.") for k in moved)


def test_stage2_lora_export_merges_into_the_trained_model(data, tmp_path):
    res = run("mllm_stage2", "mllm_stage2_tiny", f"data.items={data / 'eight_items'}", f"train.out_dir={tmp_path}")
    assert losses(res) == pytest.approx(GOLDEN_STAGE2, rel=1e-4)
    saved = final_weights(tmp_path)
    assert any(k.endswith("lora_A") for k in saved)
    exported = MGMOmni.from_pretrained(tmp_path / "model", towers=())
    assert not any("lora" in k for k in exported.state_dict())
    # the merged export and the trained LoRA model agree on a batch
    items = ShardDataset(data / "eight_items")
    batch = collate_lists([items[i] for i in range(3)])
    objective = res.model.eval()
    with torch.no_grad(), one_thread():
        want, count = objective(batch)
        objective.model = exported.float()
        got, _ = objective(batch)
    assert float(got) == pytest.approx(float(want), rel=1e-4) and int(count) > 0


@pytest.mark.parametrize("recipe, key, steps, factor", [
    ("mllm_stage1", "loss_ce", 60, 3.0),  # only the projector learns: the frozen LLM limits it
    ("mllm_stage2", "loss", 30, 50.0),
])
def test_overfit_two_clips(data, tmp_path, recipe, key, steps, factor):
    res = run(recipe, recipe + "_tiny", f"data.items={data / 'two_items'}", f"train.out_dir={tmp_path}",
              f"train.max_steps={steps}", "train.lr=1e-2")
    first, last = res.history[0][key], res.history[-1][key]
    assert last < first / factor, (first, last)


def test_sequence_lengths_match_the_splice(data):
    model, _ = build_mllm(from_dict(MLLMModelSection, read_yaml(CONFIGS / "mllm_stage1_tiny.yaml", "model")))
    items = ShardDataset(data / "eight_items")
    lengths = sequence_lengths(items, model.cfg.speech_encoder_ds_rate)
    assert len(lengths) == 10
    for i in range(len(items)):
        item = items[i]
        media = []
        if len(item["main"]):
            n = len(item["main"]) // 25 * 5  # 25 main frames per 1 s window, 5 tokens each
            media = [MediaFeatures("audio", torch.zeros(n, 64))]
        spliced = splice_batch(model, [MLLMSample(item["prompt_ids"].tolist(), item["target_ids"].tolist(), media)])
        assert spliced.embeds.shape[1] == lengths[i]


def _soft_dtw_recursion(c: list[list[float]], gamma: float) -> float:
    n, m = len(c), len(c[0])
    r = [[math.inf] * (m + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = [r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]]
            low = min(prev)
            r[i][j] = c[i - 1][j - 1] + low - gamma * math.log(sum(math.exp(-(p - low) / gamma) for p in prev))
    return r[n][m]


@pytest.mark.parametrize("n, m", [(1, 1), (3, 5), (6, 2), (7, 7)])
def test_soft_dtw_matches_the_recursion(n, m):
    cost = torch.rand(n, m, dtype=torch.float64, generator=torch.Generator().manual_seed(n * 10 + m))
    assert float(soft_dtw(cost, 0.1)) == pytest.approx(_soft_dtw_recursion(cost.tolist(), 0.1), rel=1e-12)
    # gamma -> 0: hard DTW, never above the diagonal-path cost when n == m
    if n == m:
        assert float(soft_dtw(cost, 1e-4)) <= float(cost.diagonal().sum()) + 1e-9


def test_alignment_loss_prefers_aligned_speech_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(4, 16, generator=g)
    aligned = text.repeat_interleave(3, dim=0)  # each transcript token spoken for 3 frames, in order
    shuffled = aligned.flip(0)
    cfg = AlignConfig(temperature=0.1)
    assert float(alignment_loss(aligned, text, cfg)) < float(alignment_loss(shuffled, text, cfg))
    x = aligned.clone().requires_grad_(True)
    alignment_loss(x, text, cfg).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert float(alignment_loss(aligned, text, AlignConfig(align_type="truncated"))) > 0
    with pytest.raises(ValueError, match="align_type"):
        AlignConfig(align_type="ctc")


def test_lora_starts_as_the_base_and_merges_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(5, 8)
    base = net(x)
    names = apply_lora(net, ["0", "2"], rank=2, alpha=4.0)
    assert names == ["0", "2"] and isinstance(net[0], LoRALinear)
    assert torch.equal(net(x), base)  # B starts at zero
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"]
    with torch.no_grad():
        net[0].lora_B.normal_()
        net[2].lora_B.normal_()
    tuned = net(x)
    assert merge_lora(net) == 2 and type(net[0]) is nn.Linear
    assert torch.allclose(net(x), tuned, atol=1e-5)
