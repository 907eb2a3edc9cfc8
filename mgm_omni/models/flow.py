"""CosyVoice2 flow matching (``CausalMaskedDiffWithXvec``): speech tokens + reference prompt -> log-mel.

Tokens (25 Hz) are embedded, encoded by an upsampling conformer into frame features mu (50 Hz),
and a conditional flow matcher integrates from fixed noise to the mel with 10 Euler steps on a
cosine time schedule and classifier-free guidance. The reference prompt (its tokens, its mel and
its x-vector) conditions the whole sequence; only the frames of the new tokens are returned.

Attribute names follow the official ``flow.pt`` keys, so the released state dict loads directly:
``input_embedding``, ``spk_embed_affine_layer``, ``encoder.*``, ``encoder_proj``, ``decoder.estimator.*``.
The fixed noise is the only buffer, and it is not part of the state dict.

Besides the official rate (``token_mel_ratio`` frames per token), ``n_frames`` asks for any number of
frames for the new tokens (length regulation): tokens are repeated onto frames by nearest mapping
before the upsampling conv, prompt and new part separately, so the prompt mel stays aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgm_omni.models.conformer import UpsampleConformerEncoder
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.flow_estimator import CausalConditionalDecoder


class FlowInputError(ValueError):
    """Tokens, prompt or speaker embedding given to the flow are malformed."""


def chunk_attention_mask(chunk_ids: torch.Tensor) -> torch.Tensor:
    """(T,) chunk index per position -> (T, T) bool mask: a query sees its own and all earlier chunks."""
    return chunk_ids.unsqueeze(0) <= chunk_ids.unsqueeze(1)


def frame_to_token(
    n_prompt_tokens: int, n_tokens: int, n_prompt_frames: int, n_frames: int, device=None
) -> torch.Tensor:
    """Nearest-neighbour map from each mel frame to its token: (n_prompt_frames + n_frames,) long.

    Prompt and new tokens are spread separately over their own frames, so the prompt mel stays
    aligned with the prompt tokens whatever the ratio. With ``ratio`` frames per token on both
    sides this is ``frame // ratio``, the official nearest upsampling.
    """
    prompt = torch.arange(n_prompt_frames, device=device) * n_prompt_tokens // max(n_prompt_frames, 1)
    new = torch.arange(n_frames, device=device) * n_tokens // max(n_frames, 1)
    return torch.cat([prompt, n_prompt_tokens + new])


def regulated_frames(n_tokens: int, frames_per_token: float) -> int:
    """Frame count for ``n_tokens`` at a (possibly non-integer) frame rate ratio, rounded half up."""
    return int(n_tokens * frames_per_token + 0.5)


class CausalConditionalCFM(nn.Module):
    """Euler solver of the conditional flow with classifier-free guidance; holds estimator and fixed noise."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.estimator = CausalConditionalDecoder(cfg.estimator)
        self.n_timesteps = cfg.n_timesteps
        self.cfg_rate = cfg.inference_cfg_rate
        self.t_scheduler = cfg.t_scheduler
        # One draw, seeded, on CPU, so every run (and the official code) starts from the same noise;
        # frame t of a call always uses noise column t.
        gen = torch.Generator(device="cpu").manual_seed(cfg.noise_seed)
        noise = torch.randn((1, cfg.output_size, cfg.noise_frames), generator=gen, device="cpu")
        self.register_buffer("rand_noise", noise, persistent=False)

    def time_span(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(n_timesteps + 1,) flow times from 0 to 1; the cosine schedule takes small steps near t = 0."""
        t = torch.linspace(0, 1, self.n_timesteps + 1, device=device, dtype=dtype)
        if self.t_scheduler == "cosine":
            t = 1 - torch.cos(t * 0.5 * torch.pi)
        return t

    def noise_at(self, start: int, frames: int) -> torch.Tensor:
        """Fixed-noise columns of the absolute frames ``start .. start+frames-1``: (1, 80, frames).

        Frame t uses column t; past the buffer (``noise_frames``) the columns wrap around, so a stream
        of any length has noise (inside the buffer this is exactly the one-call slice)."""
        n = self.rand_noise.shape[2]
        if start + frames <= n:
            return self.rand_noise[:, :, start : start + frames]
        cols = torch.arange(start, start + frames, device=self.rand_noise.device) % n
        return self.rand_noise.index_select(2, cols)

    def forward(
        self, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
        noise: torch.Tensor | None = None, contexts: list | None = None,
    ) -> torch.Tensor:
        """Integrate from the fixed noise to the mel.

        Args:
            mu, cond: (B, 80, T) encoder output and prompt-mel condition; spks: (B, 80).
            mask: (T, T) bool attention mask for the estimator, or None.
            noise: (1, 80, T) starting noise (default: the first T columns of the fixed noise).
            contexts: cached streaming, one estimator context per ODE step (see ``flow_estimator``).

        Returns:
            (B, 80, T) mel of the whole sequence (prompt frames included).
        """
        b, _, frames = mu.shape
        x = (self.rand_noise[:, :, :frames] if noise is None else noise).to(mu).expand(b, -1, -1)
        t_span = self.time_span(mu.device, mu.dtype)
        guided = self.cfg_rate > 0
        if guided:  # row block 2: the unconditional branch sees mu = spks = cond = 0
            mu, spks, cond = (torch.cat([v, torch.zeros_like(v)]) for v in (mu, spks, cond))
        t, dt = t_span[:1], t_span[1] - t_span[0]
        for step in range(1, len(t_span)):
            x_in = torch.cat([x, x]) if guided else x
            ctx = None if contexts is None else contexts[step - 1]
            v = self.estimator(x_in, mu, t.expand(x_in.shape[0]), spks, cond, mask, ctx)
            if guided:
                v_cond, v_uncond = v.chunk(2)
                v = (1.0 + self.cfg_rate) * v_cond - self.cfg_rate * v_uncond
            x = x + dt * v
            # accumulate t and re-derive dt from the schedule, as the official solver does
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        return x


class CausalFlow(nn.Module):
    """CosyVoice2 ``CausalMaskedDiffWithXvec`` (inference only)."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.config = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.decoder = CausalConditionalCFM(cfg)

    @torch.inference_mode()
    def inference(
        self,
        token: torch.Tensor,
        prompt_token: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        streaming: bool = False,
        finalize: bool = True,
        n_frames: int | None = None,
    ) -> torch.Tensor:
        """Mel of the new tokens, conditioned on the reference prompt.

        Args:
            token: (B, Ln) new speech tokens in [0, vocab_size).
            prompt_token: (B, Lp) reference-prompt tokens (Lp may be 0).
            prompt_feat: (B, Fp, 80) reference-prompt log-mel; Fp = token_mel_ratio * Lp unless
                ``n_frames`` is given.
            embedding: (B, spk_embed_dim) raw x-vector (L2-normalised here).
            streaming: chunk-causal attention (encoder chunks of ``static_chunk_size`` tokens).
            finalize: False for a non-final streaming call: the last ``pre_lookahead_len`` tokens
                are only look-ahead context and get no frames.
            n_frames: length regulation: the number of frames for the encoded new tokens, at any
                ratio (see :func:`regulated_frames`); default ``token_mel_ratio`` per token.

        Returns:
            (B, 80, F) mel at the frame rate, F = ``n_frames`` or ``token_mel_ratio`` x encoded new tokens.
        """
        cfg = self.config
        self._check(token, prompt_token, prompt_feat, embedding, finalize, n_frames)
        n_prompt, n_prompt_frames = prompt_token.shape[1], prompt_feat.shape[1]

        spks = self.spk_embed_affine_layer(F.normalize(embedding.to(prompt_feat.dtype), dim=1))  # (B, 80)
        x = self.input_embedding(torch.cat([prompt_token, token], dim=1).long())  # (B, Lp+Ln, D)
        context = None
        if not finalize:  # the look-ahead tokens only feed the pre-lookahead conv
            x, context = x[:, : -cfg.pre_lookahead_len], x[:, -cfg.pre_lookahead_len :]
        n_new = x.shape[1] - n_prompt
        if n_frames is None:
            n_frames = cfg.token_mel_ratio * n_new
        total = n_prompt_frames + n_frames
        if total > cfg.noise_frames:
            raise FlowInputError(
                f"{total} mel frames exceed the fixed noise ({cfg.noise_frames} frames); split the call"
            )

        src = frame_to_token(n_prompt, n_new, n_prompt_frames, n_frames, device=x.device)  # (F_total,)
        token_mask = frame_mask = None
        if streaming and cfg.encoder.static_chunk_size > 0:
            token_chunk = torch.arange(x.shape[1], device=x.device) // cfg.encoder.static_chunk_size
            token_mask = chunk_attention_mask(token_chunk)
            frame_mask = chunk_attention_mask(token_chunk[src])  # 25 tokens -> 50 frames at ratio 2
        h = self.encoder(x, context, src, token_mask, frame_mask)
        mu = self.encoder_proj(h).transpose(1, 2)  # (B, 80, F_total)

        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt_frames] = prompt_feat.transpose(1, 2)
        mel = self.decoder(mu, spks, cond, frame_mask)
        return mel[:, :, n_prompt_frames:]

    def _check(
        self,
        token: torch.Tensor,
        prompt_token: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        finalize: bool,
        n_frames: int | None,
    ) -> None:
        cfg = self.config
        for name, ids in (("token", token), ("prompt_token", prompt_token)):
            if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise FlowInputError(
                    f"{name} must be a (B, L) integer tensor, got {tuple(ids.shape)} {ids.dtype}"
                )
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
                raise FlowInputError(
                    f"{name} ids must lie in [0, {cfg.vocab_size}), got {int(ids.min())}..{int(ids.max())}"
                )
        batch = token.shape[0]
        n_new, n_prompt = token.shape[1], prompt_token.shape[1]
        if n_new == 0:
            raise FlowInputError("token is empty: nothing to synthesise")
        if not finalize and n_new <= cfg.pre_lookahead_len:
            raise FlowInputError(
                f"a non-final call needs more than {cfg.pre_lookahead_len} new tokens (look-ahead), "
                f"got {n_new}"
            )
        if prompt_feat.dim() != 3 or prompt_feat.shape[2] != cfg.output_size:
            raise FlowInputError(
                f"prompt_feat must be (B, frames, {cfg.output_size}), got {tuple(prompt_feat.shape)}"
            )
        if embedding.dim() != 2 or embedding.shape[1] != cfg.spk_embed_dim:
            raise FlowInputError(f"embedding must be (B, {cfg.spk_embed_dim}), got {tuple(embedding.shape)}")
        if not (prompt_token.shape[0] == prompt_feat.shape[0] == embedding.shape[0] == batch):
            raise FlowInputError(
                f"batch sizes differ: token {batch}, prompt_token {prompt_token.shape[0]}, "
                f"prompt_feat {prompt_feat.shape[0]}, embedding {embedding.shape[0]}"
            )
        n_prompt_frames = prompt_feat.shape[1]
        if n_frames is None:
            if n_prompt_frames != cfg.token_mel_ratio * n_prompt:
                raise FlowInputError(
                    f"prompt mel has {n_prompt_frames} frames but {n_prompt} prompt tokens need "
                    f"{cfg.token_mel_ratio * n_prompt}; trim both to n = min(frames // "
                    f"{cfg.token_mel_ratio}, tokens)"
                )
        else:
            if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames <= 0:
                raise FlowInputError(f"n_frames must be a positive int, got {n_frames!r}")
            if (n_prompt == 0) != (n_prompt_frames == 0):
                raise FlowInputError(
                    f"prompt has {n_prompt} tokens but {n_prompt_frames} mel frames; "
                    "both or neither must be empty"
                )
