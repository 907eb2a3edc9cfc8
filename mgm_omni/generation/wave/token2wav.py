"""Speech tokens to waveform, streaming and offline, with the CosyVoice2 flow and the HiFT vocoder.

Each render call runs the flow on the reference prompt plus the tokens so far (its chunk-causal
attention sees all earlier tokens), keeps the mel frames of the new hop, and vocodes them with
HiFT continuing from the previous call: the last 8 mel frames and their excitation source are
carried over (continuous sine phase) and the first 3840 samples are cross-faded with the withheld
tail of the previous call (a Hamming window). These are the official mechanics; what differs:

* the first hop is small (25-49 tokens, ending on the flow's 25-token chunk grid) so the first
  packet comes after 1-2 s of audio instead of 8+ s; later hops grow to a cap;
* past ``context_tokens`` the flow context is re-anchored (the oldest vocoded tokens are dropped,
  keeping a grid-aligned tail as left context) while the HiFT cache is *kept*, so there is no seam;
* ``flush`` renders every remaining token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


class Token2WavError(ValueError):
    """Tokens or reference prompt unusable for rendering."""


@dataclass
class ReferencePrompt:
    """The flow's conditioning: reference tokens (1, Lp), their mel (1, 2*Lp, 80), x-vector (1, 192)."""

    tokens: torch.Tensor
    mel: torch.Tensor
    xvector: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.mel.dim() != 3 or self.xvector.dim() != 2:
            raise Token2WavError("reference prompt needs tokens (1, L), mel (1, F, 80) and x-vector (1, D)")

    @property
    def n_tokens(self) -> int:
        return self.tokens.shape[1]


@dataclass
class StreamSchedule:
    """How tokens are grouped into render calls.

    Args:
        first_hop: minimum first hop in tokens; it is extended so that prompt + hop ends on the chunk grid.
        hop_growth: each later hop is the previous one times this.
        max_hop: cap on later hops (multiple of ``grid``). Every render re-runs the flow over the held
            context, so fewer, larger hops cost less in total; doubling hops never starve playback while
            the SpeechLM is faster than real time (each hop's audio lasts as long as the audio before it).
            Measured (tiny decoder, 60 s stream): cap 800 costs 0.26-0.27 compute s per audio s, cap 200
            0.63-0.72; the first packet is the same.
        grid: the flow's streaming chunk size in tokens (hop boundaries stay on it).
        lookahead: tokens after the hop the flow sees as right context.
        context_tokens: re-anchor the flow context once this many tokens are held (official: 6000).
        keep_tokens: left context kept at a re-anchor (rounded so boundaries stay on the grid).
        official: reproduce the official schedule exactly (hop 200 + pad, then 400, 800, 1600, ...).
        causal_final: render the last call chunk-causally too (the official uses full attention
            there); then the streamed mel equals one chunk-causal flow pass over all tokens.
    """

    first_hop: int = 25
    hop_growth: int = 2
    max_hop: int = 800
    grid: int = 25
    lookahead: int = 3
    context_tokens: int = 6000
    keep_tokens: int = 100
    official: bool = False
    causal_final: bool = False

    def __post_init__(self) -> None:
        if self.first_hop < 1 or self.grid < 1 or self.lookahead < 0 or self.hop_growth < 1:
            raise ValueError("first_hop, grid, hop_growth must be >= 1 and lookahead >= 0")
        if self.max_hop % self.grid or self.max_hop < self.grid:
            raise ValueError(f"max_hop ({self.max_hop}) must be a positive multiple of grid ({self.grid})")
        if self.keep_tokens >= self.context_tokens:
            raise ValueError("keep_tokens must be smaller than context_tokens")

    def first(self, n_prompt: int) -> int:
        if self.official:
            return 200 + (math.ceil(n_prompt / 200) * 200 - n_prompt)
        hop = self.first_hop
        return hop + (-(n_prompt + hop)) % self.grid


@dataclass
class StreamState:
    """Per-stream state; ``reset()`` starts a new utterance with the same prompt."""

    prompt: ReferencePrompt
    schedule: StreamSchedule
    tokens: list[int] = field(default_factory=list)  # tokens held for the flow (after re-anchors)
    offset: int = 0  # tokens of ``tokens`` already vocoded
    hop: int = 0
    block_rate: int = 2  # official schedule only
    mel_cache: torch.Tensor | None = None  # (1, 80, 8)
    source_cache: torch.Tensor | None = None  # (1, 1, 3840)
    speech_cache: torch.Tensor | None = None  # (1, 3840) withheld tail, cross-faded into the next call
    emitted: int = 0  # samples emitted so far
    consumed: int = 0  # tokens rendered so far, over the whole stream
    finished: bool = False
    seed: int | None = None  # HiFT source noise: a per-stream generator, or torch's global RNG if None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens, self.offset, self.emitted, self.consumed = [], 0, 0, 0
        self.hop = self.schedule.first(self.prompt.n_tokens)
        self.block_rate = 2
        self.mel_cache = self.source_cache = self.speech_cache = None
        self.finished = False
        self.generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None


class Token2Wav:
    """Flow + HiFT renderer. Models are used read-only; all stream state lives in :class:`StreamState`.

    Args:
        flow: a :class:`~mgm_omni.models.flow.CausalFlow`.
        vocoder: a :class:`~mgm_omni.models.hift.HiFTGenerator`.
        mel_cache_frames / crossfade: HiFT overlap (8 frames, 3840 samples at 24 kHz in the release).
    """

    def __init__(self, flow, vocoder, mel_cache_frames: int = 8, crossfade: int | None = None) -> None:
        self.flow = flow
        self.vocoder = vocoder
        self.ratio = flow.config.token_mel_ratio
        self.vocab = flow.config.vocab_size
        self.hop_samples = vocoder.cfg.hop_length if hasattr(vocoder, "cfg") else 480
        self.mel_cache_frames = mel_cache_frames
        self.crossfade = crossfade if crossfade is not None else mel_cache_frames * self.hop_samples
        window = np.hamming(2 * self.crossfade)  # float64, as the release computes it
        self.fade_in = torch.from_numpy(window[: self.crossfade]).float()
        self.fade_out = torch.from_numpy(window[self.crossfade:]).float()

    def start(self, prompt: ReferencePrompt, schedule: StreamSchedule | None = None,
              seed: int | None = None) -> StreamState:
        """A new stream; with ``seed`` its vocoder noise is its own (reproducible, thread-safe)."""
        return StreamState(prompt, schedule or StreamSchedule(), seed=seed)

    def push(self, state: StreamState, tokens: Iterable[int]) -> list[np.ndarray]:
        """Add tokens; return the audio chunks (float32, 24 kHz) that became ready."""
        if state.finished:
            raise Token2WavError("stream already flushed; call reset() to start a new one")
        new = [int(t) for t in tokens]
        bad = [t for t in new if not 0 <= t < self.vocab]
        if bad:
            raise Token2WavError(f"speech token ids must lie in [0, {self.vocab}), got {bad[:5]}")
        state.tokens.extend(new)
        out = []
        sched = state.schedule
        while len(state.tokens) - state.offset >= state.hop + sched.lookahead:
            out.append(self._render(state, state.offset + state.hop, finalize=False))
            self._advance(state)
        return out

    def flush(self, state: StreamState) -> np.ndarray:
        """Render every remaining token (and the withheld tail) and close the stream."""
        if state.finished:
            return np.zeros(0, np.float32)
        state.finished = True
        if len(state.tokens) > state.offset:
            return self._render(state, len(state.tokens), finalize=True)
        if state.speech_cache is not None:  # nothing new: release the withheld tail as is
            tail = state.speech_cache[0].numpy().astype(np.float32)
            state.emitted += tail.shape[0]
            return tail
        return np.zeros(0, np.float32)

    def stream(self, prompt: ReferencePrompt, tokens: Iterable[Sequence[int]] | Iterable[int],
               schedule: StreamSchedule | None = None) -> Iterator[np.ndarray]:
        """Render an iterable of tokens (or of token groups, e.g. SpeechLM rows) as it arrives."""
        state = self.start(prompt, schedule)
        for item in tokens:
            group = item if isinstance(item, (list, tuple, np.ndarray, torch.Tensor)) else [item]
            yield from self.push(state, group)
        tail = self.flush(state)
        if tail.size:
            yield tail

    def render(self, prompt: ReferencePrompt, tokens: Sequence[int], block_tokens: int = 1500) -> np.ndarray:
        """Offline rendering of any length: one full-context flow call when it fits, else long hops.

        Long inputs go through the streaming machinery with large hops (``block_tokens``), so there
        is no independent-block seam as in the official 6000-token blocks.
        """
        tokens = list(tokens)
        if not tokens:
            raise Token2WavError("no speech tokens to render")
        if len(tokens) <= block_tokens:
            state = self.start(prompt)
            state.tokens = [int(t) for t in tokens]
            bad = [t for t in state.tokens if not 0 <= t < self.vocab]
            if bad:
                raise Token2WavError(f"speech token ids must lie in [0, {self.vocab}), got {bad[:5]}")
            return self.flush(state)
        grid = 25
        schedule = StreamSchedule(first_hop=block_tokens, max_hop=(block_tokens // grid) * grid, hop_growth=1,
                                  context_tokens=max(6000, 2 * block_tokens), keep_tokens=100)
        return np.concatenate(list(self.stream(prompt, tokens, schedule)))

    # ----------------------------------------------------------------------------------------------

    def _advance(self, state: StreamState) -> None:
        sched = state.schedule
        state.consumed += state.hop
        state.offset += state.hop
        if sched.official:
            state.hop = min(200 * state.block_rate, 1600)
            state.block_rate = min(2 * state.block_rate, 15)
        else:
            state.hop = min(state.hop * sched.hop_growth, sched.max_hop)
            state.hop += (-state.hop) % sched.grid
        if len(state.tokens) >= sched.context_tokens:
            self._reanchor(state)

    def _reanchor(self, state: StreamState) -> None:
        # Drop the oldest vocoded tokens but keep a left context whose start keeps the flow's chunk
        # grid where it was: (prompt + kept) must stay a multiple of the grid.
        grid = state.schedule.grid
        keep = state.schedule.keep_tokens
        keep += (-(state.prompt.n_tokens + keep)) % grid
        keep = min(keep, state.offset)
        drop = state.offset - keep
        state.tokens = state.tokens[drop:]
        state.offset = keep

    def _render(self, state: StreamState, end: int, finalize: bool) -> np.ndarray:
        prompt = state.prompt
        start = state.offset
        look = 0 if finalize else state.schedule.lookahead
        token = torch.tensor([state.tokens[: end + look]], dtype=torch.long)
        streaming = not finalize or state.schedule.causal_final
        mel = self.flow.inference(token, prompt.tokens, prompt.mel, prompt.xvector,
                                  streaming=streaming, finalize=finalize)
        mel = mel[:, :, start * self.ratio:]  # frames of this hop only
        if state.mel_cache is not None:
            mel = torch.cat([state.mel_cache, mel], dim=2)
        extra = {"generator": state.generator} if state.generator is not None else {}
        with torch.inference_mode():
            speech, source = self.vocoder.inference(mel, cache_source=state.source_cache, **extra)
        if state.speech_cache is not None:
            n = self.crossfade
            speech = speech.clone()
            speech[:, :n] = speech[:, :n] * self.fade_in + state.speech_cache * self.fade_out
        if not finalize:
            state.mel_cache = mel[:, :, -self.mel_cache_frames:]
            state.source_cache = source[:, :, -self.crossfade:]
            state.speech_cache = speech[:, -self.crossfade:]
            speech = speech[:, : -self.crossfade]
        else:
            state.consumed += end - start
            state.offset = end
        chunk = speech[0].float().numpy()
        state.emitted += chunk.shape[0]
        return chunk
