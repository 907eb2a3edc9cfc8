"""Default brain, stage 1: audio-to-text with both towers and the LLM frozen; only the projector learns.

Reads the features of ``recipes/brain_default_features.py`` (towers already run) and trains the
information-mining projector in two phases on the same items:

1. ``align``: the alignment loss of spec §5 alone (``mgm_omni.training.align_loss``: soft-DTW over
   -log softmax(x . y / tau) against the LLM's embeddings of the transcript); no LLM forward, so it is ~40-70x
   cheaper per item and pulls the audio tokens toward the LLM's embedding space;
2. ``ce``: cross-entropy of the transcript through the frozen LLM (the transcription prompt of
   :class:`~mgm_omni.generation.mllm.transcriber.Transcriber`, spliced exactly as at inference; the 136M-wide
   ``lm_head`` only where a label is), plus ``align.weight`` x the alignment loss.

``recipes/mllm_stage1.py`` trains the same projector on whole padded windows, one window per clip; this driver
packs clips into windows and crops them, because on a 2-core CPU a window costs ~2.3 s of tower time whatever
it holds.

An item is one utterance, or a run of consecutive utterances of a window (their transcripts joined), cropped
at token boundaries: what inference sees with ``speech_trim_padding``. The trained projector is written in bf16
with its sha256 to ``out_assets`` (``mgm_omni/hub/assets/brain/``: ``projector.safetensors`` + ``brain.json``).

    nice -n 5 .venv/bin/python recipes/brain_default.py recipes/configs/brain_default.yaml [key=value ...]

Stage 2 is the same driver with ``data.qa_features`` (``recipes/brain_stage2_data.py``: spoken questions whose
targets are the LLM's own typed answers, trained under the chat prompt) beside the stage-1 items:
``recipes/configs/brain_stage2.yaml``. A training checkpoint becomes shippable assets with
``run.init=<out_dir>/checkpoints/step-N/model.safetensors phases.ce.train.max_steps=0 run.history=null
run.out_assets=DIR``.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgm_omni.config import OmniConfig  # noqa: E402
from mgm_omni.generation.mllm.batch_splice import IGNORE_INDEX, MLLMSample, splice_batch  # noqa: E402
from mgm_omni.generation.mllm.transcriber import TRANSCRIBE_PROMPT  # noqa: E402
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni  # noqa: E402
from mgm_omni.models.projector import DualMLPSpeechProjector, SpeechProjectorConfig  # noqa: E402
from mgm_omni.training.align_loss import AlignConfig, alignment_loss  # noqa: E402
from recipes.brain_default_features import FeatureStore  # noqa: E402

FRAMES_PER_TOKEN, AUX_PER_TOKEN = 5, 10
SECTIONS = ("run", "data", "phases")


@dataclass
class Item:
    """One training item: a window row of a feature store and a token span of it, the transcript of that span
    (``text``, read by the alignment term), and the reply the LLM is trained to give: the transcript itself for
    ``task`` "transcribe", the LLM's own typed answer (``target``) for "answer" (stage 2, the chat prompt)."""

    row: int
    tok: tuple[int, int]
    text: str
    lang: str
    task: str = "transcribe"
    target: str | None = None
    eos: bool = True
    store: int = 0


def qa_items(windows: list[dict], store: int, repeat: int, task: str = "answer") -> list[Item]:
    """Stage-2 items of ``recipes/brain_stage2_data.py`` windows: each spoken question, ``repeat`` times (none
    for 0). ``task`` "answer": the LLM's typed answer under the chat prompt; "transcribe": the question's own
    words under the transcription prompt, so that the prompt, not the sound of a question, decides which."""
    if task == "answer":
        items = [Item(w["row"], tuple(s["tok"]), s["text"], w["lang"], "answer", s["answer"], bool(s["finished"]),
                      store) for w in windows for s in w["segments"]]
    elif task == "transcribe":
        items = [Item(w["row"], tuple(s["tok"]), s["text"], w["lang"], store=store)
                 for w in windows for s in w["segments"]]
    else:
        raise ValueError(f"qa item task must be 'answer' or 'transcribe', not {task!r}")
    return items * max(0, repeat)


def make_items(windows: list[dict], max_run: int, seed: int) -> list[Item]:
    """Every utterance alone, plus one run of 2..``max_run`` consecutive utterances per window."""
    rng = random.Random(seed)
    items = []
    for w in windows:
        segs = w["segments"]
        sep = "" if w["lang"] == "zh" else " "
        items += [Item(w["row"], tuple(s["tok"]), s["text"], w["lang"]) for s in segs]
        if len(segs) > 1 and max_run > 1:
            n = rng.randint(2, min(max_run, len(segs)))
            a = rng.randint(0, len(segs) - n)
            run = segs[a:a + n]
            items.append(Item(w["row"], (run[0]["tok"][0], run[-1]["tok"][1]),
                              sep.join(s["text"] for s in run), w["lang"]))
    return items


class ItemDataset(torch.utils.data.Dataset):
    """Cropped features + transcript ids of :class:`Item` s (features read from the memory maps)."""

    def __init__(self, stores: FeatureStore | list[FeatureStore], items: list[Item], tokenizer) -> None:
        stores = stores if isinstance(stores, list) else [stores]
        self.arrays = [store.arrays() for store in stores]
        self.items, self.tok = items, tokenizer
        self.text_ids = [tokenizer.encode(it.text) for it in items]
        self.target_ids = [ids if it.target is None else tokenizer.encode(it.target)
                           for it, ids in zip(items, self.text_ids)]

    def lengths(self, prompt_len: dict[str, int] | int) -> list[int]:
        """Spliced sequence length of each item (``prompt_len``: per task, or one for all)."""
        per_task = prompt_len if isinstance(prompt_len, dict) else None
        return [(per_task[it.task] if per_task else prompt_len) + (it.tok[1] - it.tok[0]) + len(ids) + 1
                for it, ids in zip(self.items, self.target_ids)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        t0, t1 = it.tok
        main_f, aux_f = self.arrays[it.store]
        main = torch.from_numpy(main_f[it.row, t0 * FRAMES_PER_TOKEN:t1 * FRAMES_PER_TOKEN].copy())
        aux = torch.from_numpy(aux_f[it.row, t0 * AUX_PER_TOKEN:t1 * AUX_PER_TOKEN].copy())
        return {"main": main.view(torch.bfloat16).float(), "aux": aux.view(torch.bfloat16).float(),
                "text_ids": self.text_ids[i], "target_ids": self.target_ids[i], "task": it.task, "eos": it.eos}


def collate(items: list[dict]) -> dict:
    """Pad features (zeros) and transcript ids (0, masked by ``text_len``); targets, tasks and end flags as
    lists."""
    n_tok = torch.tensor([x["main"].shape[0] // FRAMES_PER_TOKEN for x in items])
    text_len = torch.tensor([len(x["text_ids"]) for x in items])
    main = nn.utils.rnn.pad_sequence([x["main"] for x in items], batch_first=True)
    aux = nn.utils.rnn.pad_sequence([x["aux"] for x in items], batch_first=True)
    text = torch.zeros(len(items), int(text_len.max()), dtype=torch.long)
    for i, x in enumerate(items):
        text[i, : len(x["text_ids"])] = torch.tensor(x["text_ids"])
    return {"main": main, "aux": aux, "n_tok": n_tok, "text": text, "text_len": text_len,
            "target": [x["target_ids"] for x in items], "task": [x["task"] for x in items],
            "eos": [x["eos"] for x in items]}


class ProjectorOnLLM(nn.Module):
    """The trainable projector; the frozen LLM rides along unregistered (not trained, not checkpointed).

    ``prompts``: the prompt ids of each task (a bare list: "transcribe" only)."""

    def __init__(self, projector: DualMLPSpeechProjector, llm: MGMOmni, prompts: dict[str, list[int]] | list[int],
                 eos_id: int) -> None:
        super().__init__()
        self.projector = projector
        object.__setattr__(self, "llm", llm.requires_grad_(False).eval())
        self.prompts = {k: list(v) for k, v in prompts.items()} if isinstance(prompts, dict) \
            else {"transcribe": list(prompts)}
        self.eos_id = int(eos_id)

    def add_lora(self, rank: int, alpha: float, targets: list[str], seed: int) -> list[str]:
        """Float32 adapters on ``targets`` of every LLM layer, registered here (``lora.<key with / for .>``) so they
        train and are checkpointed; the LLM's own weights stay frozen and unregistered."""
        from mgm_omni.training.lora import apply_lora

        names = apply_lora(self.llm, targets, rank, alpha, under="model.layers.", seed=seed, dtype=torch.float32)
        self.lora = nn.ParameterDict()
        for name in names:
            layer = self.llm.get_submodule(name)
            for part in ("lora_A", "lora_B"):
                getattr(layer, part).requires_grad_(True)
                self.lora[f"{name}.{part}".replace(".", "/")] = getattr(layer, part)
        self.lora_card = {"rank": rank, "alpha": alpha, "targets": list(targets)}
        return names

    def audio_tokens(self, batch: dict) -> torch.Tensor:
        """(B, max tokens, H) projector outputs (rows past ``n_tok`` come from zero padding)."""
        return self.projector(batch["main"], batch["aux"])


def batch_alignment(model: ProjectorOnLLM, speech: torch.Tensor, batch: dict, cfg: AlignConfig) -> torch.Tensor:
    """Mean over the batch of the spec §5 alignment loss (``mgm_omni.training.align_loss``), per sample."""
    with torch.no_grad():
        text = model.llm.model.embed_tokens(batch["text"]).float()
    terms = [alignment_loss(speech[i, : int(n)], text[i, : int(m)], cfg)
             for i, (n, m) in enumerate(zip(batch["n_tok"], batch["text_len"])) if n > 0 and m > 0]
    return torch.stack(terms).mean()


def align_loss(model: ProjectorOnLLM, batch: dict, cfg: AlignConfig) -> tuple[torch.Tensor, int]:
    """The alignment loss alone (no LLM forward), summed over the batch's items."""
    n = len(batch["n_tok"])
    return batch_alignment(model, model.audio_tokens(batch), batch, cfg) * n, n


def ce_loss(model: ProjectorOnLLM, batch: dict, align: AlignConfig | None = None) -> tuple[torch.Tensor, int]:
    """Summed reply cross-entropy (target = transcript or answer, + <|im_end|> unless cut) and its token count,
    plus ``align.weight`` x the mean alignment loss per token when ``align`` is given."""
    speech = model.audio_tokens(batch)
    llm = model.llm
    samples = []
    for i in range(speech.shape[0]):
        audio = speech[i, : int(batch["n_tok"][i])].to(llm.dtype)
        target = list(batch["target"][i]) + ([model.eos_id] if batch["eos"][i] else [])
        samples.append(MLLMSample(model.prompts[batch["task"][i]], target, [MediaFeatures("audio", audio)]))
    spliced = splice_batch(llm, samples)
    hidden = llm.model(spliced.embeds, spliced.positions[0], None, None, spliced.attention_mask)  # (B, T, H)
    labels = spliced.labels[:, 1:]
    pick = labels != IGNORE_INDEX
    logits = llm.lm_head(hidden[:, :-1][pick]).float()  # only where a label is: the lm_head is 136M wide
    loss = F.cross_entropy(logits, labels[pick], reduction="sum")
    count = int(pick.sum())
    if align is not None and align.weight > 0:
        loss = loss + align.weight * batch_alignment(model, speech, batch, align) * count
    return loss, count


def new_projector(cfg: OmniConfig, seed: int) -> DualMLPSpeechProjector:
    torch.manual_seed(seed)
    return DualMLPSpeechProjector(SpeechProjectorConfig.from_omni(cfg))


def save_projector(projector: DualMLPSpeechProjector, out: Path, card: dict) -> str:
    """``projector.safetensors`` (bf16, official key names) and ``brain.json`` (sha256 + ``card``)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {f"model.mm_speech_projector.{k}": v.detach().to(torch.bfloat16).contiguous()
             for k, v in projector.state_dict().items()}
    save_file(state, str(out / "projector.safetensors"), metadata={"format": "pt"})
    sha = hashlib.sha256((out / "projector.safetensors").read_bytes()).hexdigest()
    (out / "brain.json").write_text(json.dumps({"sha256": sha, **card}, indent=2, ensure_ascii=False) + "\n")
    return sha


def save_lora(model: ProjectorOnLLM, out: Path) -> dict:
    """``lora.safetensors`` (bf16 factors under the LLM's key names) and its card entry (sha256, rank, alpha)."""
    from safetensors.torch import save_file

    state = {k.replace("/", "."): v.detach().to(torch.bfloat16).contiguous() for k, v in model.lora.items()}
    save_file(state, str(out / "lora.safetensors"), metadata={"format": "pt"})
    return {"sha256": hashlib.sha256((out / "lora.safetensors").read_bytes()).hexdigest(), **model.lora_card}


def load_init(model: ProjectorOnLLM, init: str) -> None:
    """Projector (+ adapters, when both sides have them) from shipped assets or a training checkpoint: a shipped
    ``projector.safetensors`` with a ``lora.safetensors`` beside it, or a checkpoint's ``model.safetensors``."""
    from mgm_omni.checkpoint import load_into, load_state_dict

    state = load_state_dict(init, strip_prefix="model.mm_speech_projector.")
    load_into(model.projector, {k.removeprefix("projector."): v for k, v in state.items()
                                if not k.startswith("lora.")}, ignore_unexpected=("lora.",))
    lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
    beside = Path(init).parent / "lora.safetensors"
    if not lora and beside.is_file():
        lora = {k.replace(".", "/"): v for k, v in load_state_dict(beside).items()}
    if lora and hasattr(model, "lora"):
        with torch.no_grad():
            for k, v in model.lora.items():
                v.copy_(lora[k])
        print(f"adapters from {init}: {len(lora)} tensors", flush=True)


def main(argv=None) -> None:
    from mgm_omni.hub.default_brain import ASSETS, brain_fields, brain_parts
    from mgm_omni.text import Tokenizer, mllm_user_content
    from mgm_omni.training.config import TrainConfig, from_dict
    from mgm_omni.training.distributed import DistInfo
    from mgm_omni.training.recipe_config import load_recipe_config, parse_recipe_args
    from mgm_omni.training.recipe_loop import fit
    from mgm_omni.generation.mllm.runner import MLLM

    args = parse_recipe_args(argv, __doc__.split("\n\n")[0])
    conf = load_recipe_config(args.config, args.overrides, SECTIONS)
    run, data, phases = conf["run"], conf["data"], conf["phases"]
    torch.set_num_threads(int(run.get("threads", 1)))
    parts = brain_parts()
    omni_cfg = OmniConfig.from_dict(brain_fields(json.loads((parts.llm_dir / "config.json").read_text())))
    tokenizer = Tokenizer.from_dir(parts.llm_dir)
    llm = MGMOmni.from_llm(parts.llm_dir, dtype=getattr(torch, run.get("llm_dtype", "float32")))
    runner = MLLM(llm, tokenizer)
    prompts = {"transcribe": runner.prompt_ids([("user", mllm_user_content(TRANSCRIBE_PROMPT, speech=True))]),
               "answer": runner.prompt_ids([("user", mllm_user_content("", speech=True))])}  # chat --audio-file
    stores = [FeatureStore(Path(data["features"]))]
    windows = stores[0].windows()[: data.get("max_windows")]
    items = make_items(windows, int(data.get("max_run", 4)), int(run.get("seed", 0)))
    if data.get("qa_features"):  # stage 2: spoken questions -> the LLM's own typed answers
        stores.append(FeatureStore(Path(data["qa_features"])))
        qa = qa_items(stores[1].windows(), 1, int(data.get("qa_repeat", 1)))
        heard = qa_items(stores[1].windows(), 1, int(data.get("qa_transcribe_repeat", 0)), task="transcribe")
        print(f"stage 2: {len(qa)} spoken-question items (x{data.get('qa_repeat', 1)}), {len(heard)} of them "
              f"to transcribe (x{data.get('qa_transcribe_repeat', 0)})", flush=True)
        items += qa + heard
    dataset = ItemDataset(stores, items, tokenizer)
    lengths = dataset.lengths({k: len(v) for k, v in prompts.items()})
    prompt_ids = prompts["transcribe"]
    model = ProjectorOnLLM(new_projector(omni_cfg, int(run.get("seed", 0))), llm, prompts,
                           tokenizer.eos_token_id)
    if run.get("lora"):
        lora = run["lora"]
        names = model.add_lora(int(lora["rank"]), float(lora["alpha"]), list(lora["targets"]),
                               int(run.get("seed", 0)))
        print(f"LoRA r={lora['rank']} on {len(names)} LLM layers: "
              f"{sum(p.numel() for p in model.lora.values()) / 1e6:.2f} M parameters", flush=True)
    if run.get("init"):
        load_init(model, run["init"])
    print(f"{len(windows)} windows, {len(items)} items, {sum(it.tok[1] - it.tok[0] for it in items) / 5 / 3600:.2f} "
          f"h of audio tokens; prompt {len(prompt_ids)} ids", flush=True)
    history = {}
    start = time.perf_counter()
    for name in ("align", "ce"):
        phase = phases.get(name)
        if not phase or not phase.get("train", {}).get("max_steps"):
            continue
        cfg = from_dict(TrainConfig, phase["train"])
        align = from_dict(AlignConfig, phase.get("align", {}))
        if name == "align":
            loss_fn = lambda m, b: align_loss(m, b, align)  # noqa: E731
        else:
            loss_fn = lambda m, b: ce_loss(m, b, align)  # noqa: E731
        result = fit(model, dataset, lengths, collate, loss_fn, cfg, DistInfo(), config=conf)
        history[name] = [{k: round(v, 5) for k, v in row.items()} for row in result.history]
        print(f"{name}: {len(result.history)} steps, loss {result.history[0]['loss']:.3f} -> "
              f"{result.history[-1]['loss']:.3f}, {time.perf_counter() - start:.0f} s so far", flush=True)
    out = Path(run.get("out_assets") or ASSETS)
    card = {"recipe": "recipes/brain_default.py", "config": conf, "windows": len(windows), "items": len(items),
            "seconds": round(time.perf_counter() - start), "final_loss": {k: v[-1]["loss"] for k, v in history.items()}}
    if hasattr(model, "lora"):
        out.mkdir(parents=True, exist_ok=True)
        card["lora"] = save_lora(model, out)
    sha = save_projector(model.projector, out, card)
    if run.get("history"):
        Path(run["history"]).write_text(json.dumps(history))
    print(f"projector written to {out} (sha256 {sha})")


if __name__ == "__main__":
    main()
