"""The CosyVoice2 flow on a frame grid of any rate: one offline pass, and a cached stream that equals it.

The flow modules (:class:`~mgm_omni.models.flow.CausalFlow`) take an explicit frame-to-token map and
explicit masks or caches, so a flow trained for the HiFi-GAN mel (441/128 frames per token) is the same
model as CosyVoice2's with other config values; what differs is only the grid it runs on
(:class:`~mgm_omni.generation.wave.frame_grid.FrameGrid`). Here:

* :func:`grid_mel` renders prompt + tokens in one call, chunk-causal (the attention a stream has) or full;
  :func:`grid_mu` is its encoder output alone (no ODE), a diagnostic;
* :class:`GridFlowStream` renders the next tokens of a stream, holding the keys/values each layer and ODE
  step needs (:class:`~mgm_omni.generation.wave.frame_grid.GridCache`): a call costs only its new chunks.
  Within ``left_chunks`` of history it is exactly the chunk-causal :func:`grid_mel`.

The reference prompt is (tokens (1, Lp), mel (1, F(Lp), 80), x-vector (1, D)); its mel holds exactly the
grid's frames of its tokens (the voice front-end trims it so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mgm_omni.generation.wave.frame_grid import FrameGrid, GridError, frame_cache, token_cache
from mgm_omni.models.flow import chunk_attention_mask


def _check_prompt(flow, grid: FrameGrid, tokens: torch.Tensor, mel: torch.Tensor, xvector: torch.Tensor) -> None:
    cfg = flow.config
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise GridError(f"prompt tokens must be (1, L), got {tuple(tokens.shape)}")
    frames = grid.frames(tokens.shape[1])
    if mel.dim() != 3 or mel.shape[:2] != (1, frames) or mel.shape[2] != cfg.output_size:
        raise GridError(f"prompt mel must be (1, {frames}, {cfg.output_size}) for {tokens.shape[1]} tokens, "
                        f"got {tuple(mel.shape)}")
    if xvector.dim() != 2 or xvector.shape != (1, cfg.spk_embed_dim):
        raise GridError(f"x-vector must be (1, {cfg.spk_embed_dim}), got {tuple(xvector.shape)}")


def _check_ids(flow, ids: torch.Tensor) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= flow.config.vocab_size):
        raise GridError(f"speech token ids must lie in [0, {flow.config.vocab_size})")


def _grid_encode(flow, grid: FrameGrid, prompt_tokens: torch.Tensor, tokens: Sequence[int], chunked: bool):
    """Encoder output mu (1, 80, F(Lp + n)) of prompt + tokens and the estimator's frame mask (or None)."""
    ids = torch.cat([prompt_tokens.long(), torch.tensor([list(tokens)], dtype=torch.long)], dim=1)
    _check_ids(flow, ids)
    n_total = ids.shape[1]
    if n_total == prompt_tokens.shape[1]:
        raise GridError("no speech tokens to render")
    src = grid.token_of(torch.arange(grid.frames(n_total)))  # (F,) token of every frame
    token_mask = frame_mask = None
    if chunked:
        token_chunk = torch.arange(n_total) // grid.chunk
        token_mask, frame_mask = chunk_attention_mask(token_chunk), chunk_attention_mask(token_chunk[src])
    h = flow.encoder(flow.input_embedding(ids), None, src, token_mask, frame_mask)
    return flow.encoder_proj(h).transpose(1, 2), frame_mask  # (1, 80, F)


@torch.inference_mode()
def grid_mu(flow, grid: FrameGrid, prompt_tokens: torch.Tensor, tokens: Sequence[int],
            chunked: bool = True) -> torch.Tensor:
    """The encoder's projected mu (1, 80, F(Lp + n) - F(Lp)) of ``tokens`` after the prompt, no ODE: the
    condition the estimator refines (on the mel scale for a flow trained with a prior loss; a diagnostic)."""
    mu, _ = _grid_encode(flow, grid, prompt_tokens, tokens, chunked)
    return mu[:, :, grid.frames(prompt_tokens.shape[1]):]


@torch.inference_mode()
def grid_mel(flow, grid: FrameGrid, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor, xvector: torch.Tensor,
             tokens: Sequence[int], chunked: bool = True) -> torch.Tensor:
    """Mel (1, 80, F(Lp + n) - F(Lp)) of ``tokens`` after the prompt, in one pass.

    ``chunked``: chunk-causal attention on the grid (what a stream computes); False: full attention.
    """
    _check_prompt(flow, grid, prompt_tokens, prompt_mel, xvector)
    mu, frame_mask = _grid_encode(flow, grid, prompt_tokens, tokens, chunked)
    frames = mu.shape[2]
    n_prompt_frames = prompt_mel.shape[1]
    cond = torch.zeros_like(mu)
    cond[:, :, :n_prompt_frames] = prompt_mel.transpose(1, 2).to(mu.dtype)
    spks = flow.spk_embed_affine_layer(F.normalize(xvector.to(mu.dtype), dim=1))  # (1, 80)
    mel = flow.decoder(mu, spks, cond, frame_mask, noise=flow.decoder.noise_at(0, frames))
    return mel[:, :, n_prompt_frames:]


class GridFlowStream:
    """Incremental flow state of one stream on a frame grid (typed; ``reset()`` starts over, same prompt).

    Args:
        flow: a :class:`~mgm_omni.models.flow.CausalFlow` (used read-only).
        grid: the token/frame grid (its ``chunk`` = the flow encoder's ``static_chunk_size``).
        prompt_tokens (1, Lp), prompt_mel (1, F(Lp), 80), xvector (1, D): the reference prompt.
        left_chunks: earlier chunks each chunk attends to besides the prompt; ``None`` = all.
    """

    def __init__(self, flow, grid: FrameGrid, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor,
                 xvector: torch.Tensor, left_chunks: int | None) -> None:
        _check_prompt(flow, grid, prompt_tokens, prompt_mel, xvector)
        self.flow, self.grid = flow, grid
        self.prompt_tokens, self.prompt_mel, self.xvector = prompt_tokens.long(), prompt_mel, xvector
        n = prompt_tokens.shape[1]
        self.token_cache = token_cache(grid, n, left_chunks)
        self.frame_cache = frame_cache(grid, n, left_chunks)
        self.step_caches = [frame_cache(grid, n, left_chunks) for _ in range(flow.config.n_timesteps)]
        self._prefilled: list | None = None
        self.reset()

    def reset(self) -> None:
        """Start over with the same prompt (keeping the prefilled prompt, if any)."""
        if self._prefilled is not None:
            self.token_cache, self.frame_cache, *self.step_caches = (c.clone() for c in self._prefilled)
        else:
            for cache in self._caches():
                cache.reset()
        self.closed = False

    @torch.inference_mode()
    def prefill(self) -> GridFlowStream:
        """Render the prompt's whole chunks now (their look-ahead is prompt tokens too), so the first call of
        every stream computes at most one chunk of prompt besides its own tokens; ``reset()`` returns here."""
        if self.position or self._prefilled is not None:
            raise GridError("prefill() must come first, once")
        n, chunk, look = self.prompt_tokens.shape[1], self.grid.chunk, self.flow.config.pre_lookahead_len
        end = (n - look) // chunk * chunk
        if end > 0:
            self._render(self.prompt_tokens[:, :end], self.prompt_tokens[0, end:end + look].tolist(), False)
        self._prefilled = [c.clone() for c in self._caches()]
        return self

    def clone(self) -> GridFlowStream:
        """An independent stream at the same point (held tensors shared: no call writes into them)."""
        other = object.__new__(GridFlowStream)
        other.__dict__.update(self.__dict__)
        other.token_cache, other.frame_cache, *other.step_caches = (c.clone() for c in self._caches())
        return other

    @property
    def position(self) -> int:
        """Tokens rendered so far, the prompt included."""
        return self.token_cache.end

    @property
    def held_frames(self) -> int:
        """Frames whose keys the estimator holds (flat once the window is full)."""
        return self.step_caches[0].stored

    def _caches(self):
        return [self.token_cache, self.frame_cache, *self.step_caches]

    @torch.inference_mode()
    def render(self, tokens: Sequence[int], lookahead: Sequence[int] = (), final: bool = False) -> torch.Tensor:
        """Mel (1, 80, frames) of the next tokens.

        A non-final call must end on the chunk grid (prompt + tokens so far a multiple of ``grid.chunk``)
        and carry exactly ``pre_lookahead_len`` look-ahead tokens; the final call takes none and closes.
        """
        flow, grid, cfg = self.flow, self.grid, self.flow.config
        if self.closed:
            raise GridError("the flow stream is closed (final call made); reset() to start again")
        ids = torch.tensor([list(tokens)], dtype=torch.long)
        ahead = torch.tensor([list(lookahead)], dtype=torch.long)
        if ids.shape[1] == 0:
            raise GridError("no tokens to render")
        _check_ids(flow, torch.cat([ids, ahead], dim=1))
        if self.position < self.prompt_tokens.shape[1]:  # the prompt (or what prefill left of it) goes first
            ids = torch.cat([self.prompt_tokens[:, self.position:], ids], dim=1)
        start, n = self.position, ids.shape[1]
        if not final:
            if ahead.shape[1] != cfg.pre_lookahead_len:
                raise GridError(f"a non-final call needs {cfg.pre_lookahead_len} look-ahead tokens, got {ahead.shape[1]}")
            if (start + n) % grid.chunk:
                raise GridError(f"a non-final call must end on the {grid.chunk}-token grid (prompt + tokens = {start + n})")
        elif ahead.shape[1]:
            raise GridError("the final call takes no look-ahead tokens")
        mel = self._render(ids, lookahead, final)
        self.closed = final
        return mel

    def _render(self, ids: torch.Tensor, lookahead: Sequence[int], final: bool) -> torch.Tensor:
        """The flow over ``ids`` (1, n) continuing at ``position``: mel of its non-prompt frames."""
        flow, grid = self.flow, self.grid
        ahead = torch.tensor([list(lookahead)], dtype=torch.long)
        start, n = self.position, ids.shape[1]
        x = flow.input_embedding(ids)  # (1, n, D)
        context = flow.input_embedding(ahead) if not final else None
        f_start, f_stop = grid.frames(start), grid.frames(start + n)
        self.token_cache.begin(start, n)
        self.frame_cache.begin(f_start, f_stop - f_start)
        src = grid.token_of(torch.arange(f_start, f_stop)) - start  # frame -> token of this call
        h = flow.encoder(x, context, src, None, None, self.token_cache, self.frame_cache)
        mu = flow.encoder_proj(h).transpose(1, 2)  # (1, 80, f)

        n_prompt_frames = self.prompt_mel.shape[1]
        cond = torch.zeros_like(mu)
        if f_start < n_prompt_frames:  # the prompt's frames in this call (a prefill call holds only prompt)
            k = min(n_prompt_frames, f_stop) - f_start
            cond[:, :, :k] = self.prompt_mel[:, f_start:f_start + k].transpose(1, 2).to(mu.dtype)
        spks = flow.spk_embed_affine_layer(F.normalize(self.xvector.to(mu.dtype), dim=1))
        for cache in self.step_caches:
            cache.begin(f_start, f_stop - f_start)
        noise = flow.decoder.noise_at(f_start, f_stop - f_start)
        mel = flow.decoder(mu, spks, cond, None, noise=noise, contexts=self.step_caches)
        for cache in self._caches():
            cache.finish()
        return mel[:, :, max(0, n_prompt_frames - f_start):]
