"""The SpeechLM training objective and what each stage trains.

:class:`SpeechLMObjective` wraps a :class:`~mgm_omni.models.speech_lm.SpeechLM` so the whole loss runs inside
one ``forward`` (what DDP and FSDP expect): rows -> backbone and adapter states -> text and speech logits ->
``CE_text + CE_speech`` (spec §1.6, :func:`~mgm_omni.models.speech_lm.speech_lm_loss`).

For ``train_step``'s ``(loss_sum, count)`` contract the loss of a micro-batch is weighted by its supervised
rows: one micro-batch gives exactly the official loss, and several micro-batches (or ranks) give the
row-weighted mean of theirs.

Stages (spec §5): ``stage1`` freezes the Qwen3 layers and final norm and trains the TTS-Adapter and the new
rows of the shared embedding / ``lm_head`` (the three audio ids and the k speech blocks; the text rows keep
their pretrained values through a gradient mask); ``stage2`` trains everything.
"""

from __future__ import annotations

import torch
from torch import nn

from mgm_omni.models.speech_lm import IGNORE_INDEX, SpeechLM, speech_lm_loss
from mgm_omni.training.speechlm_guide import GuideConfig, chunk_bands, guide_loss, phone_loss

STAGES = ("stage1", "stage2")


class SpeechLMObjective(nn.Module):
    """``forward(batch) -> (loss_sum, rows)`` over a padded batch of ``rows`` / ``labels`` (B, T, 1 + k).

    Padding rows carry label -100 (nothing learned) and are masked out of attention. ``text_weight`` scales
    ``CE_text`` (1.0: the official loss); ``guide`` adds the guided-attention loss of
    :mod:`~mgm_omni.training.speechlm_guide` (weight 0: none, the official loss).
    """

    def __init__(self, model: SpeechLM, text_weight: float = 1.0, guide: GuideConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.text_weight = text_weight
        self.guide = guide if guide is not None and guide.active else None
        if self.guide is not None:
            self.guide.check(model)
        # training-only phoneme head (guide.phone_weight): not under ``model.``, so never exported
        self.phone_head = (nn.Linear(model.cfg.hidden_size, model.cfg.speech_token_count * guide.phone_classes)
                           if self.guide is not None and guide.phone_weight > 0 else None)
        self.last: dict[str, float] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, labels = batch["rows"], batch["labels"]
        lengths = batch["rows_lengths"]
        pad_mask = torch.arange(rows.shape[1], device=rows.device)[None] < lengths[:, None]  # (B, T)
        guided = self.guide is not None and self.guide.weight > 0
        attention = self.model.model.layers[self.guide.layer].self_attn if guided else None
        if attention is not None:
            attention.capture = []
        try:
            h, g = self.model(rows, pad_mask=pad_mask)
            captured = attention.capture if attention is not None else None
        finally:
            if attention is not None:
                attention.capture = None
        _, loss_text, loss_speech = speech_lm_loss(self.model.text_logits(h), self.model.speech_logits(g), labels)
        loss = self.text_weight * loss_text + loss_speech  # 1.0: the official sum, exactly
        self.last = {"loss_text": float(loss_text.detach()), "loss_speech": float(loss_speech.detach())}
        if self.guide is not None:
            bands = chunk_bands(rows, labels, lengths, self.model.cfg, batch.get("align"), batch.get("align_lengths"))
            if captured:
                loss_guide = guide_loss(*captured[0], bands, self.guide)
                loss = loss + self.guide.weight * loss_guide
                self.last["loss_guide"] = float(loss_guide.detach())
            if self.phone_head is not None:
                loss_phone = phone_loss(h, bands, self.phone_head, self.model.cfg.speech_token_count)
                loss = loss + self.guide.phone_weight * loss_phone
                self.last["loss_phone"] = float(loss_phone.detach())
        supervised = (labels[:, 1:] != IGNORE_INDEX).any(-1).sum()  # rows whose next row is learned
        return loss * supervised, supervised


def new_row_span(model: SpeechLM) -> tuple[int, int]:
    """Rows of the embedding / ``lm_head`` that a text LLM lacks: ``[audio_start, vocab)``."""
    return model.cfg.text_size - 3, model.cfg.vocab_size


def _row_mask_hook(start: int, stop: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros(grad.shape[0], 1, dtype=grad.dtype, device=grad.device)
        keep[start:stop] = 1
        return grad * keep

    return hook


def set_stage(model: SpeechLM, stage: str, freeze_pretrained: bool = True) -> list[torch.utils.hooks.RemovableHandle]:
    """Mark what ``stage`` trains (``requires_grad``) and mask the gradient of pretrained embedding rows.

    ``freeze_pretrained=False`` lets stage 1 train everything too: a backbone trained from scratch (our own
    small mouth) has no pretrained layers or text rows to keep, and frozen random ones cannot learn to read.
    Returns the hook handles (remove them to train every row again). The embedding and ``lm_head`` rows are
    in AdamW's no-decay group, so a row with a zero gradient stays exactly as it was.
    """
    if stage not in STAGES:
        raise ValueError(f"SpeechLM stage must be one of {STAGES}, got {stage!r}")
    model.requires_grad_(True)
    handles = []
    if stage == "stage1" and freeze_pretrained:
        model.model.requires_grad_(False)
        if model.tts_adapter is None:
            raise ValueError("stage1 trains the TTS-Adapter, but this SpeechLM has none (tts_adapter_type)")
        start, stop = new_row_span(model)
        tables = {id(p): p for p in (model.model.embed_tokens.weight, model.lm_head.weight)}
        for p in tables.values():  # one table when tied
            p.requires_grad_(True)
            handles.append(p.register_hook(_row_mask_hook(start, stop)))
    return handles


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (a shared tensor counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params)}
