"""The default brain's stage-1 recipe pieces on a tiny stand-in: crops of packed windows equal the tokens of the
whole window, the label-only CE equals the CE of full logits, and two steps of each phase train only the
projector (the frozen LLM rides along, unsaved)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mgm_omni.config import OmniConfig  # noqa: E402
from mgm_omni.generation.mllm.batch_splice import IGNORE_INDEX, MLLMSample, splice_batch  # noqa: E402
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni  # noqa: E402
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig  # noqa: E402
from mgm_omni.training.align_loss import AlignConfig  # noqa: E402
from mgm_omni.training.config import TrainConfig, from_dict  # noqa: E402
from mgm_omni.training.distributed import DistInfo  # noqa: E402
from mgm_omni.training.recipe_loop import fit  # noqa: E402
from recipes.brain_default import (  # noqa: E402
    ItemDataset,
    ProjectorOnLLM,
    align_loss,
    ce_loss,
    collate,
    make_items,
    qa_items,
)
from recipes.brain_default_features import FeatureStore  # noqa: E402

PROMPT = [151644, 872, 198, -500, 198, 151645, 198, 151644, 77091, 198]
CHAT_PROMPT = [151644, 872, 198, -500, 151645, 198, 151644, 77091, 198]


class CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) % 1000 + 10 for c in text]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two packed windows of random (bf16-rounded) tower features: one English, one Chinese."""
    s = FeatureStore(tmp_path_factory.mktemp("features"))
    g = torch.Generator().manual_seed(0)
    for lang, texts in (("en", ["a cat", "the dog ran", "hi"]), ("zh", ["你好", "再见吧"])):
        segs, at = [], 1
        for t in texts:
            segs.append({"id": t, "audio": "", "text": t, "speaker": "x", "start": at * 3200, "samples": 9000,
                         "tok": [at, at + 3]})
            at += 5
        s.append({"window": 0, "lang": lang, "segments": segs},
                 torch.randn(750, 512, generator=g), torch.randn(1500, 384, generator=g))
    return s


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = OmniConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, mm_speech_hidden_size=512, speech_encoder_hidden_size=896,
                     llm_family="qwen2")
    llm = MGMOmni(cfg).eval()
    proj = DualMLPSpeechProjector(SpeechProjectorConfig(main_dim=512, aux_dim=384, out_dim=64, mlp_dim=32))
    return ProjectorOnLLM(proj, llm, PROMPT, 151645)


def test_items_are_every_utterance_and_a_run_per_window(store):
    items = make_items(store.windows(), max_run=4, seed=0)
    singles = [it for it in items if it.text in {"a cat", "the dog ran", "hi", "你好", "再见吧"}]
    runs = [it for it in items if it not in singles]
    assert len(singles) == 5 and len(runs) == 2
    zh_run = next(it for it in runs if it.lang == "zh")
    assert zh_run.text == "你好再见吧" and zh_run.tok == (1, 9)  # joined without a space, spans both
    en_run = next(it for it in runs if it.lang == "en")
    assert " " in en_run.text and en_run.tok[1] - en_run.tok[0] >= 8


def test_a_crop_projects_to_the_tokens_of_the_whole_window(store, tiny):
    items = make_items(store.windows(), max_run=1, seed=0)
    data = ItemDataset(store, items, CharTokenizer())
    main, aux = store.arrays()
    full_main = torch.from_numpy(main[0].copy()).view(torch.bfloat16).float()[None]
    full_aux = torch.from_numpy(aux[0].copy()).view(torch.bfloat16).float()[None]
    with torch.no_grad():
        whole = tiny.projector(full_main, full_aux)[0]  # (150, 64)
        batch = collate([data[1]])  # "the dog ran": tokens 6..9
        crop = tiny.audio_tokens(batch)[0]
    assert items[1].tok == (6, 9) and batch["n_tok"].tolist() == [3]
    assert torch.allclose(crop, whole[6:9], atol=1e-5)


def test_label_only_cross_entropy_equals_full_logits(store, tiny):
    data = ItemDataset(store, make_items(store.windows(), max_run=4, seed=0), CharTokenizer())
    batch = collate([data[i] for i in range(4)])
    with torch.no_grad():
        loss, count = ce_loss(tiny, batch)
        speech = tiny.audio_tokens(batch)
        samples = [MLLMSample(PROMPT, batch["text"][i, : batch["text_len"][i]].tolist() + [151645],
                              [MediaFeatures("audio", speech[i, : batch["n_tok"][i]])]) for i in range(4)]
        spliced = splice_batch(tiny.llm, samples)
        logits = tiny.llm(spliced.embeds, spliced.positions, pad_mask=spliced.attention_mask)
        ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), spliced.labels[:, 1:].flatten(),
                              ignore_index=IGNORE_INDEX, reduction="sum")
    assert count == int((spliced.labels != IGNORE_INDEX).sum()) == int(batch["text_len"].sum()) + 4
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("phase", ["align", "ce"])
def test_two_steps_train_only_the_projector(store, tiny, phase, tmp_path):
    torch.manual_seed(0)
    data = ItemDataset(store, make_items(store.windows(), max_run=4, seed=0), CharTokenizer())
    llm_before = {k: v.clone() for k, v in tiny.llm.state_dict().items()}
    proj_before = {k: v.clone() for k, v in tiny.projector.state_dict().items()}
    cfg = from_dict(TrainConfig, {"lr": 1e-3, "warmup_steps": 0, "max_steps": 2, "max_tokens": 200,
                                  "num_buckets": 1, "precision": "fp32", "out_dir": str(tmp_path),
                                  "ckpt_every": 1000, "loader": {"num_workers": 0, "persistent_workers": False}})
    align = AlignConfig(weight=1.0 if phase == "align" else 0.1, temperature=0.1)
    loss_fn = (lambda m, b: align_loss(m, b, align)) if phase == "align" else (lambda m, b: ce_loss(m, b, align))
    result = fit(tiny, data, data.lengths(len(PROMPT)), collate, loss_fn, cfg, DistInfo())
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert set(result.model.state_dict()) == {f"projector.{k}" for k in proj_before}  # no LLM in checkpoints
    assert all(torch.equal(v, llm_before[k]) for k, v in tiny.llm.state_dict().items())
    assert any(not torch.equal(v, proj_before[k]) for k, v in tiny.projector.state_dict().items())


def test_stage2_items_train_the_typed_answer_under_the_chat_prompt(store, tiny, tmp_path):
    """A spoken-question item: its target is the LLM's answer (end id only when the answer finished), spliced
    after the chat prompt; the same batch through splice_batch by hand gives the same loss."""
    qa = FeatureStore(tmp_path / "qa")
    g = torch.Generator().manual_seed(1)
    segs = [{"text": "what is one plus one", "answer": "Two.", "finished": True, "tok": [0, 4]},
            {"text": "name a colour", "answer": "Red, green and", "finished": False, "tok": [5, 8]}]
    qa.append({"window": 0, "lang": "en", "segments": segs}, torch.randn(750, 512, generator=g),
              torch.randn(1500, 384, generator=g))
    items = make_items(store.windows(), max_run=1, seed=0)[:1] + qa_items(qa.windows(), store=1, repeat=2)
    assert [it.task for it in items] == ["transcribe"] + ["answer"] * 4 and not items[2].eos
    model = ProjectorOnLLM(tiny.projector, tiny.llm, {"transcribe": PROMPT, "answer": CHAT_PROMPT}, 151645)
    tok = CharTokenizer()
    data = ItemDataset([store, qa], items, tok)
    assert data.lengths({"transcribe": len(PROMPT), "answer": len(CHAT_PROMPT)})[1:3] == \
        [len(CHAT_PROMPT) + 4 + len("Two.") + 1, len(CHAT_PROMPT) + 3 + len("Red, green and") + 1]
    batch = collate([data[i] for i in range(3)])
    with torch.no_grad():
        loss, count = ce_loss(model, batch)
        speech = model.audio_tokens(batch)
        samples = [MLLMSample(p, t, [MediaFeatures("audio", speech[i, : batch["n_tok"][i]])]) for i, (p, t) in
                   enumerate([(PROMPT, tok.encode(items[0].text) + [151645]),
                              (CHAT_PROMPT, tok.encode("Two.") + [151645]),
                              (CHAT_PROMPT, tok.encode("Red, green and"))])]
        spliced = splice_batch(model.llm, samples)
        logits = model.llm(spliced.embeds, spliced.positions, pad_mask=spliced.attention_mask)
        ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), spliced.labels[:, 1:].flatten(),
                              ignore_index=IGNORE_INDEX, reduction="sum")
    assert count == len(items[0].text) + 1 + len("Two.") + 1 + len("Red, green and")
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_spoken_questions_can_also_be_items_to_transcribe(tmp_path):
    """``qa_transcribe_repeat``: the same question clips, under the transcription prompt, with the question's own
    words as the target (no answer), so the prompt decides between transcribing and answering."""
    qa = FeatureStore(tmp_path / "qa")
    g = torch.Generator().manual_seed(2)
    segs = [{"text": "what is one plus one", "answer": "Two.", "finished": True, "tok": [0, 4]}]
    qa.append({"window": 0, "lang": "en", "segments": segs}, torch.randn(750, 512, generator=g),
              torch.randn(1500, 384, generator=g))
    heard = qa_items(qa.windows(), store=1, repeat=3, task="transcribe")
    assert [(it.task, it.target, it.text, it.tok, it.store) for it in heard] == \
        [("transcribe", None, "what is one plus one", (0, 4), 1)] * 3
    data = ItemDataset([qa, qa], heard[:1], CharTokenizer())
    assert data[0]["target_ids"] == data[0]["text_ids"] == CharTokenizer().encode("what is one plus one")
    assert qa_items(qa.windows(), store=1, repeat=0, task="transcribe") == []
    with pytest.raises(ValueError, match="answer"):
        qa_items(qa.windows(), store=1, repeat=1, task="translate")


def test_stage2_questions_keep_clear_of_the_evaluation_questions():
    from recipes.brain_questions_eval import QUESTIONS
    from recipes.brain_stage2_data import disjoint_from_eval, training_questions

    kept, dropped = disjoint_from_eval(training_questions() + [QUESTIONS[0][0], "What is the capital of France now?"])
    assert QUESTIONS[0][0] in dropped and "What is the capital of France now?" in dropped
    assert len(kept) > 300 and not {q for q, _ in QUESTIONS} & set(kept)
    assert "What is the capital of Chile?" in kept  # the same template with another entity stays


def test_window_plan_goes_on_when_one_language_is_used_up():
    """Once the Mandarin utterances are packed, English takes every turn (this used to spin forever)."""
    from types import SimpleNamespace

    from recipes.brain_default_features import plan_windows

    rows = [SimpleNamespace(id=f"{lang}{i}", lang=lang, duration=9.0, audio="", text="x", speaker="s")
            for lang, n in (("en", 40), ("zh", 2)) for i in range(n)]
    plan = plan_windows(rows, 1000, seed=0)
    ids = [seg["id"] for w in plan for seg in w["segments"]]
    assert sorted(ids) == sorted(r.id for r in rows)  # every row once, then the plan ends
    assert {w["lang"] for w in plan[-3:]} == {"en"}
