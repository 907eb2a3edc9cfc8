"""The flow, one call per hop, computing only the new chunks (cached chunk-causal streaming).

The flow's streaming path is chunk-causal everywhere: the encoder's convs look at most 3 tokens
ahead (the look-ahead every non-final call carries) and otherwise only back, attention is
chunk-causal at both rates, the estimator's convs are causal and frame ``t`` always starts from
noise column ``t``. So the frames of a chunk never change once its look-ahead is known, and a call
only has to compute its new chunks if it keeps, from earlier calls, the left context of every conv
and the keys/values of every attention layer: once for the encoder (token and frame rate) and once
per ODE step for the estimator (both guidance branches). :class:`FlowStream` holds that state
(:class:`~mgm_omni.generation.wave.chunk_cache.ChunkCache` objects) and drives the model's ``ctx``
hooks. With ``left_chunks=None`` its output is the one-pass chunk-causal flow over everything
(``CausalFlow.inference(streaming=True, finalize=True)``); with a window, keys older than the window
are dropped (the reference prompt always stays), so time and memory per chunk are flat.

Memory held per position of (prompt + window): the estimator keeps 2 x 2 x (blocks) x (heads x
head_dim) values per frame per ODE step: 4.6 MB per frame at the full CosyVoice2 size (56 blocks,
512 wide, 10 steps) in float32, 2.3 MB in float16 (the default storage), 20 / 10 KB for the tiny model.
With the default window (8 chunks) and a 4 s prompt that is 600 frames: 1.4 GB per open stream at
full size. The final call frees it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mgm_omni.generation.wave.chunk_cache import ChunkCache


class FlowStreamError(ValueError):
    """A call the cached flow cannot make (bad tokens, a hop off the chunk grid, a closed stream)."""


class FlowStream:
    """Incremental flow state of one stream (typed; ``reset()`` starts over with the same prompt).

    Args:
        flow: a :class:`~mgm_omni.models.flow.CausalFlow` (used read-only) with chunked attention.
        prompt_tokens: (1, Lp) reference tokens; prompt_mel: (1, ratio*Lp, 80); xvector: (1, D).
        left_chunks: earlier chunks each chunk attends to besides the prompt; ``None`` = all.
        cache_dtype: storage type of the estimator's held keys/values (``None``: the flow's dtype);
            ``torch.float16`` halves the dominant memory (see the module docstring).
    """

    def __init__(self, flow, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor, xvector: torch.Tensor,
                 left_chunks: int | None, cache_dtype: torch.dtype | None = None) -> None:
        cfg = flow.config
        if cfg.encoder.static_chunk_size <= 0:
            raise FlowStreamError("the flow has no attention chunks (static_chunk_size 0): it cannot stream")
        if prompt_tokens.dim() != 2 or prompt_tokens.shape[0] != 1:
            raise FlowStreamError(f"prompt tokens must be (1, L), got {tuple(prompt_tokens.shape)}")
        n_prompt = prompt_tokens.shape[1]
        if prompt_mel.shape[:2] != (1, cfg.token_mel_ratio * n_prompt) or prompt_mel.shape[2] != cfg.output_size:
            raise FlowStreamError(f"prompt mel must be (1, {cfg.token_mel_ratio * n_prompt}, {cfg.output_size}), "
                                  f"got {tuple(prompt_mel.shape)}")
        self.flow, self.cfg = flow, cfg
        self.prompt_tokens, self.prompt_mel, self.xvector = prompt_tokens.long(), prompt_mel, xvector
        self.chunk, self.ratio, self.left_chunks = cfg.encoder.static_chunk_size, cfg.token_mel_ratio, left_chunks
        frames = self.chunk * self.ratio
        self.token_cache = ChunkCache(self.chunk, n_prompt, left_chunks)
        self.frame_cache = ChunkCache(frames, self.ratio * n_prompt, left_chunks)
        self.step_caches = [ChunkCache(frames, self.ratio * n_prompt, left_chunks, cache_dtype)
                            for _ in range(cfg.n_timesteps)]
        self.reset()

    def reset(self) -> None:
        for cache in self._caches():
            cache.reset()
        self.closed = False

    @property
    def position(self) -> int:
        """Tokens rendered so far, the prompt included."""
        return self.token_cache.end

    @property
    def held_positions(self) -> int:
        """Frames whose keys the estimator holds now (flat once the window is full)."""
        return self.step_caches[0].stored

    def _caches(self) -> list[ChunkCache]:
        return [self.token_cache, self.frame_cache, *self.step_caches]

    @torch.inference_mode()
    def render(self, tokens: Sequence[int], lookahead: Sequence[int] = (), final: bool = False) -> torch.Tensor:
        """Mel (1, 80, ratio * len(tokens)) of the next tokens.

        A non-final call must end on the chunk grid (prompt + tokens so far a multiple of the chunk)
        and carry exactly ``pre_lookahead_len`` look-ahead tokens; the final call takes none (the
        encoder sees zeros past the end) and closes the stream.
        """
        cfg = self.cfg
        if self.closed:
            raise FlowStreamError("the flow stream is closed (final call made); reset() to start again")
        ids = torch.tensor([list(tokens)], dtype=torch.long)
        ahead = torch.tensor([list(lookahead)], dtype=torch.long)
        every = torch.cat([ids, ahead], dim=1)
        if ids.shape[1] == 0:
            raise FlowStreamError("no tokens to render")
        if every.numel() and (int(every.min()) < 0 or int(every.max()) >= cfg.vocab_size):
            raise FlowStreamError(f"speech token ids must lie in [0, {cfg.vocab_size})")
        first = self.position == 0
        if first:
            ids = torch.cat([self.prompt_tokens, ids], dim=1)
        start, n = self.position, ids.shape[1]
        if not final:
            if ahead.shape[1] != cfg.pre_lookahead_len:
                raise FlowStreamError(f"a non-final call needs {cfg.pre_lookahead_len} look-ahead tokens, "
                                      f"got {ahead.shape[1]}")
            if (start + n) % self.chunk:
                raise FlowStreamError(f"a non-final call must end on the {self.chunk}-token grid "
                                      f"(prompt + tokens = {start + n})")
        elif ahead.shape[1]:
            raise FlowStreamError("the final call takes no look-ahead tokens")

        flow = self.flow
        dtype = self.prompt_mel.dtype
        x = flow.input_embedding(ids)  # (1, n, D)
        context = flow.input_embedding(ahead) if not final else None
        self.token_cache.begin(start, n)
        f_start, f_n = self.ratio * start, self.ratio * n
        self.frame_cache.begin(f_start, f_n)
        src = torch.arange(f_n) // self.ratio  # nearest upsampling: each token onto `ratio` frames
        h = flow.encoder(x, context, src, None, None, self.token_cache, self.frame_cache)
        mu = flow.encoder_proj(h).transpose(1, 2)  # (1, 80, F)

        n_prompt_frames = self.prompt_mel.shape[1]
        cond = torch.zeros_like(mu)
        if f_start < n_prompt_frames:
            cond[:, :, : n_prompt_frames - f_start] = self.prompt_mel[:, f_start:].transpose(1, 2).to(mu.dtype)
        spks = flow.spk_embed_affine_layer(F.normalize(self.xvector.to(dtype), dim=1))  # (1, 80)
        for cache in self.step_caches:
            cache.begin(f_start, f_n)
        mel = flow.decoder(mu, spks, cond, None, noise=flow.decoder.noise_at(f_start, f_n), contexts=self.step_caches)
        for cache in self._caches():
            cache.finish()
            if final:
                cache.release()
        self.closed = final
        return mel[:, :, max(0, n_prompt_frames - f_start):]
