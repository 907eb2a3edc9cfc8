"""The flow-matching training objective of :class:`~mgm_omni.models.flow.CausalFlow` (CosyVoice2 style).

Per micro-batch every clip is cut to one common window of ``F`` mel frames (``segment_frames``, or the
shortest clip), so the estimator runs on an unpadded (B, n_mels, F) batch and full attention stays exact.
Per clip:

1. the units under the window and the ``pre_lookahead_len`` units after it (real look-ahead) are embedded
   and encoded; the units are spread over the clip's exact frame count by nearest interpolation
   (``frame_to_token``, as inference with ``n_frames`` does), then the window's frames are kept -> mu;
2. with probability ``prompt_prob`` a prefix of up to ``prompt_max_ratio`` of the window is the prompt mel:
   it is the condition ``cond`` there and is left out of the loss;
3. the x-vector is L2-normalised and projected (``spk_embed_affine_layer``).

Then :func:`~mgm_omni.models.flow_loss.flow_matching_loss` (cosine time schedule, ``sigma_min``,
classifier-free-guidance dropout of mu, x-vector and prompt with ``cfg_rate``) over the non-prompt frames,
plus, with ``prior_weight`` > 0, that weight times Matcha's prior loss of mu on the window's mel
(:func:`~mgm_omni.models.flow_loss.prior_loss`; off by default, as CosyVoice2 trains).
With ``chunk_causal`` the encoder and estimator use the chunk-causal masks of streaming inference.
Randomness (window, prompt, t, noise, dropout) comes from the global torch RNG, which checkpoints restore.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.models.flow import CausalFlow, chunk_attention_mask, frame_to_token
from mgm_omni.models.flow_loss import FlowLossConfig, flow_matching_loss, prior_loss


@dataclass
class FlowTrainConfig:
    """Window, prompt masking and attention of the flow objective (loss settings: :class:`FlowLossConfig`)."""

    segment_frames: int = 300
    prompt_prob: float = 0.5
    prompt_max_ratio: float = 0.3
    chunk_causal: bool = False
    sigma_min: float = 1e-6
    t_scheduler: str = "cosine"
    cfg_rate: float = 0.2
    prior_weight: float = 0.0  # 0 = CosyVoice2 (no prior loss); > 0 adds w x prior loss of mu on the mel
    prior_loss: str = "l2"

    def __post_init__(self) -> None:
        if self.segment_frames < 2:
            raise ValueError(f"segment_frames must be >= 2, got {self.segment_frames}")
        if not (0 <= self.prompt_prob <= 1 and 0 <= self.prompt_max_ratio < 1):
            raise ValueError("prompt_prob must be in [0, 1] and prompt_max_ratio in [0, 1)")
        if self.prior_weight < 0 or self.prior_loss not in ("l1", "l2"):
            raise ValueError(f"prior_weight must be >= 0 and prior_loss 'l1' or 'l2', got {self.prior_weight}, "
                             f"{self.prior_loss!r}")

    @property
    def loss(self) -> FlowLossConfig:
        return FlowLossConfig(self.sigma_min, self.t_scheduler, self.cfg_rate)


class FlowObjective(nn.Module):
    """``forward(batch) -> (loss_sum, frames)``: the CFM loss summed over the learned frames of the batch."""

    def __init__(self, flow: CausalFlow, cfg: FlowTrainConfig) -> None:
        super().__init__()
        self.flow = flow
        self.cfg = cfg

    def _mu(self, units: torch.Tensor, n_units: int, n_frames: int, start: int, width: int) -> torch.Tensor:
        """(width, D) encoder frames ``start .. start + width`` of one clip (units over all its frames)."""
        flow, fc = self.flow, self.flow.config
        src = frame_to_token(0, n_units, 0, n_frames, device=units.device)[start:start + width]
        t0, t1 = int(src[0]), int(src[-1]) + 1
        x = flow.input_embedding(units[None, t0:t1])  # (1, L, D)
        ahead = units[t1:min(n_units, t1 + fc.pre_lookahead_len)]
        context = flow.input_embedding(ahead[None]) if len(ahead) else None
        token_mask = frame_mask = None
        if self.cfg.chunk_causal and fc.encoder.static_chunk_size > 0:
            chunk = torch.arange(t0, t1, device=units.device) // fc.encoder.static_chunk_size
            token_mask, frame_mask = chunk_attention_mask(chunk), chunk_attention_mask(chunk[src - t0])
        h = flow.encoder(x, context, src - t0, token_mask, frame_mask)  # (1, width, D)
        return flow.encoder_proj(h)[0]  # (width, n_mels)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        units, mel, xvec = batch["units"], batch["mel"], batch["xvector"]
        n_units, n_frames = batch["units_lengths"].tolist(), batch["mel_lengths"].tolist()
        b, dev = len(n_frames), mel.device
        width = min(self.cfg.segment_frames, *n_frames)
        starts = [int(torch.randint(0, f - width + 1, ())) for f in n_frames]
        x1 = torch.stack([mel[i, s:s + width] for i, s in enumerate(starts)]).transpose(1, 2)  # (B, M, F)
        mu = torch.stack([self._mu(units[i], n_units[i], n_frames[i], s, width)
                          for i, s in enumerate(starts)]).transpose(1, 2)  # (B, M, F)
        use_prompt = torch.rand(b) < self.cfg.prompt_prob
        prompt = (torch.rand(b) * self.cfg.prompt_max_ratio * width).long() * use_prompt  # (B,) prompt frames
        is_prompt = (torch.arange(width)[None] < prompt[:, None]).to(dev)  # (B, F)
        cond = x1 * is_prompt[:, None]
        spks = self.flow.spk_embed_affine_layer(F.normalize(xvec.to(x1.dtype), dim=1))  # (B, M)
        attn = None
        if self.cfg.chunk_causal and self.flow.config.estimator.static_chunk_size > 0:
            attn = chunk_attention_mask(torch.arange(width, device=dev) // self.flow.config.estimator.static_chunk_size)
        learned = ~is_prompt  # (B, F)
        loss = flow_matching_loss(self.flow.decoder.estimator, x1, mu, learned, spks, cond, self.cfg.loss,
                                  attn_mask=attn, input_mask=torch.ones_like(learned))
        if self.cfg.prior_weight > 0:  # mu of every window frame (prompt too) onto its mel
            loss = loss + self.cfg.prior_weight * prior_loss(mu, x1, torch.ones_like(learned), self.cfg.prior_loss)
        count = learned.sum()
        return loss * count, count
