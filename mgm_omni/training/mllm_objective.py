"""The MLLM training objective: project the cached tower features, splice, next-token CE on the reply.

:class:`MLLMObjective` wraps an :class:`~mgm_omni.models.omni_lm.MGMOmni` so the whole loss runs in one
``forward`` (DDP / FSDP): every window of the batch goes through the information-mining projector at once,
each sample's audio tokens replace its ``<speech>`` placeholder
(:func:`~mgm_omni.generation.mllm.batch_splice.splice_batch`: the inference splice, mRoPE positions,
labels only on the reply), the LLM runs on the right-padded batch, and the loss is the cross-entropy summed
over reply tokens (``count`` = those tokens). With an :class:`~mgm_omni.training.align_loss.AlignConfig`
(stage 1, optional) ``weight * mean_samples(L_align)`` is added per reply token, i.e. to the mean loss.

Stages (spec §5): ``stage1`` trains the speech projector only (towers and LLM frozen); ``stage2`` trains
the projector plus the LLM, through LoRA adapters, the top ``n`` layers, or fully.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.generation.mllm.batch_splice import IGNORE_INDEX, MLLMSample, splice_batch
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni
from mgm_omni.training.align_loss import AlignConfig, alignment_loss
from mgm_omni.training.lora import apply_lora

LLM_MODES = ("frozen", "lora", "layers", "full")


class MLLMObjective(nn.Module):
    """``forward(batch) -> (loss_sum, reply tokens)`` over lists ``prompt_ids``, ``target_ids``, ``main``, ``aux``.

    Args:
        main_frames, aux_frames: encoder frames per window (750 / 1500 for the real towers).
        align: the optional alignment loss (its transcript is the reply without the final eos).
    """

    def __init__(self, model: MGMOmni, main_frames: int, aux_frames: int, align: AlignConfig | None = None) -> None:
        super().__init__()
        if model.model.mm_speech_projector is None:
            raise ValueError("the MLLM has no speech projector (mm_speech_projector_type)")
        self.model = model
        self.main_frames, self.aux_frames = main_frames, aux_frames
        self.align = align
        self.last: dict[str, float] = {}

    def audio_tokens(self, main: list[torch.Tensor], aux: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Per sample, its (n_windows * T_main // k, H) audio tokens, or None for a text-only sample."""
        proj = self.model.model.mm_speech_projector
        windows = [len(m) // self.main_frames for m in main]
        if not any(windows):
            return [None] * len(main)
        dtype = proj.linear1.weight.dtype
        # cast before cat: CPU autocast cannot mix fp16 features into its bf16 casts
        x_main = torch.cat([m.to(dtype) for m in main if len(m)]).unflatten(0, (-1, self.main_frames))
        x_aux = torch.cat([a.to(dtype) for a in aux if len(a)]).unflatten(0, (-1, self.aux_frames))
        tokens = proj(x_main, x_aux)  # (total windows, T_main // k, H)
        out, at = [], 0
        for n in windows:
            out.append(tokens[at:at + n].flatten(0, 1) if n else None)
            at += n
        return out

    def forward(self, batch: dict[str, list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        audio = self.audio_tokens(batch["main"], batch["aux"])
        samples = [MLLMSample(p.tolist(), t.tolist(), [MediaFeatures("audio", a)] if a is not None else [])
                   for p, t, a in zip(batch["prompt_ids"], batch["target_ids"], audio)]
        spliced = splice_batch(self.model, samples)
        logits = self.model(spliced.embeds, spliced.positions, pad_mask=spliced.attention_mask)  # (B, T, V)
        labels = spliced.labels[:, 1:]
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="sum")
        count = (labels != IGNORE_INDEX).sum()
        loss_sum, parts = ce, {"loss_ce": float(ce.detach()) / max(1, int(count))}
        if self.align is not None and self.align.weight > 0:
            embed = self.model.model.embed_tokens
            terms = [alignment_loss(a, embed(t[:-1].to(a.device)), self.align)
                     for a, t in zip(audio, batch["target_ids"]) if a is not None and len(t) > 1]
            if terms:
                align = torch.stack(terms).mean()
                loss_sum = loss_sum + self.align.weight * align * count
                parts["loss_align"] = float(align.detach())
        self.last = parts
        return loss_sum, count


def set_stage(model: MGMOmni, stage: str, llm: str = "frozen", lora_rank: int = 8, lora_alpha: float = 16.0,
              lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"), top_layers: int = 0,
              seed: int = 0) -> None:
    """Freeze what ``stage`` keeps fixed; for stage 2 open the LLM as ``llm`` says.

    ``llm``: ``frozen`` (stage 1), ``lora`` (adapters on ``lora_targets`` of every layer), ``layers`` (the top
    ``top_layers`` layers and the final norm) or ``full`` (every LLM weight). The towers never train.
    """
    if stage not in ("stage1", "stage2"):
        raise ValueError(f"MLLM stage must be 'stage1' or 'stage2', got {stage!r}")
    if llm not in LLM_MODES or (stage == "stage1" and llm != "frozen") or (stage == "stage2" and llm == "frozen"):
        raise ValueError(f"llm {llm!r} does not fit {stage}: stage1 keeps the LLM frozen, stage2 trains it "
                         f"({', '.join(LLM_MODES[1:])})")
    model.requires_grad_(False)
    model.model.mm_speech_projector.requires_grad_(True)
    if llm == "lora":
        apply_lora(model.model, lora_targets, lora_rank, lora_alpha, under="layers.", seed=seed)
    elif llm == "layers":
        n = len(model.model.layers)
        if not 0 < top_layers <= n:
            raise ValueError(f"top_layers must be in [1, {n}], got {top_layers}")
        for layer in model.model.layers[n - top_layers:]:
            layer.requires_grad_(True)
        model.model.norm.requires_grad_(True)
    elif llm == "full":
        model.requires_grad_(True)
    for tower in (model.model.speech_tower, model.model.vision_tower):
        if tower is not None:
            tower.requires_grad_(False)
