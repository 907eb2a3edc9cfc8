"""Speech tokens to waveform, streaming and offline, with the CosyVoice2 flow and the HiFT vocoder.

Each render call turns the tokens of one hop into mel frames with the flow, and vocodes them with
HiFT continuing from the previous call: the last 8 mel frames and their excitation source are
carried over (continuous sine phase) and the first 3840 samples are cross-faded with the withheld
tail of the previous call (a Hamming window). These are the official mechanics; what differs:

* the flow is **cached** (default, :mod:`~mgm_omni.generation.wave.flow_stream`): a call computes
  only its new chunks, attending to the reference prompt plus a bounded window of earlier chunks
  (``StreamSchedule.left_chunks``), so each audio minute costs the same time and the stream holds
  a fixed amount of memory however long it runs. Inside the window the mel is exactly the official
  chunk-causal flow over all tokens; the official re-render of the whole context at every hop (and
  its re-anchoring past ``context_tokens``) remains available (``cached=False``, ``official=True``);
* the first hop is small (25-49 tokens, ending on the flow's 25-token chunk grid) so the first
  packet comes after 1-2 s of audio instead of 8+ s; later hops grow to a cap;
* ``flush`` renders every remaining token.

Offline ``render`` of a short input is one full-attention flow call (the official offline
path); longer inputs go through the same cached stream as streaming does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from mgm_omni.generation.wave.flow_stream import FlowStream
from mgm_omni.generation.wave.stream_state import ReferencePrompt, StreamSchedule, StreamState, Token2WavError

__all__ = ["ReferencePrompt", "StreamSchedule", "StreamState", "Token2Wav", "Token2WavError"]


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
        self.sample_rate = vocoder.cfg.sampling_rate if hasattr(vocoder, "cfg") else 24000
        self.mel_cache_frames = mel_cache_frames
        self.crossfade = crossfade if crossfade is not None else mel_cache_frames * self.hop_samples
        window = np.hamming(2 * self.crossfade)  # float64, as the release computes it
        self.fade_in = torch.from_numpy(window[: self.crossfade]).float()
        self.fade_out = torch.from_numpy(window[self.crossfade:]).float()

    def start(self, prompt: ReferencePrompt, schedule: StreamSchedule | None = None,
              seed: int | None = None) -> StreamState:
        """A new stream; with ``seed`` its vocoder noise is its own (reproducible, thread-safe)."""
        schedule = schedule or StreamSchedule()
        state = StreamState(prompt, schedule, seed=seed)
        if schedule.uses_cache:
            if schedule.grid != self.flow.config.encoder.static_chunk_size:
                raise Token2WavError(f"schedule grid {schedule.grid} must be the flow's chunk "
                                     f"({self.flow.config.encoder.static_chunk_size} tokens) for the cached flow")
            if schedule.lookahead != self.flow.config.pre_lookahead_len:
                raise Token2WavError(f"schedule lookahead {schedule.lookahead} must be the flow's "
                                     f"({self.flow.config.pre_lookahead_len}) for the cached flow")
            state.flow = FlowStream(self.flow, prompt.tokens, prompt.mel, prompt.xvector, schedule.left_chunks,
                                    schedule.cache_torch_dtype)
        return state

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

    def push_iter(self, state: StreamState, tokens: Iterable[int]) -> Iterator[np.ndarray]:
        """:meth:`push` as an iterator (the common interface with the own mouth's stack, which yields each
        vocoder call as it is made; here a hop is one HiFT call, so the chunks come as :meth:`push` makes them)."""
        return drained(self.push(state, tokens))

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

    def render(self, prompt: ReferencePrompt, tokens: Sequence[int], block_tokens: int = 1500,
               schedule: StreamSchedule | None = None) -> np.ndarray:
        """Offline rendering of any length: one full-attention flow call when it fits, else a stream.

        Up to ``block_tokens`` tokens this is the official offline call (full attention). Longer inputs
        go through the streaming machinery (``schedule``, default: the cached flow with hops of up to
        ``block_tokens``), so there is no independent-block seam as in the official 6000-token blocks.
        """
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise Token2WavError("no speech tokens to render")
        bad = [t for t in tokens if not 0 <= t < self.vocab]
        if bad:
            raise Token2WavError(f"speech token ids must lie in [0, {self.vocab}), got {bad[:5]}")
        if len(tokens) <= block_tokens:
            state = StreamState(prompt, StreamSchedule(cached=False))
            state.tokens = tokens
            return self.flush(state)
        if schedule is None:
            grid = self.flow.config.encoder.static_chunk_size or 25
            cap = max(grid, (block_tokens // grid) * grid)
            schedule = StreamSchedule(first_hop=cap, max_hop=cap, hop_growth=1, grid=grid,
                                      context_tokens=max(6000, 2 * block_tokens))
        return np.concatenate(list(self.stream(prompt, tokens, schedule)))

    # ----------------------------------------------------------------------------------------------

    def _advance(self, state: StreamState) -> None:
        sched = state.schedule
        state.consumed += state.hop
        if state.flow is not None:  # the cached flow holds what it needs: drop the rendered tokens
            del state.tokens[: state.hop]
        else:
            state.offset += state.hop
        if sched.official:
            state.hop = min(200 * state.block_rate, 1600)
            state.block_rate = min(2 * state.block_rate, 15)
        else:
            state.hop = min(state.hop * sched.hop_growth, sched.max_hop)
            state.hop += (-state.hop) % sched.grid
        if state.flow is None and len(state.tokens) >= sched.context_tokens:
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

    def _flow_mel(self, state: StreamState, end: int, finalize: bool) -> torch.Tensor:
        """(1, 80, F) mel of tokens[offset:end] (plus the look-ahead after them unless finalizing)."""
        start = state.offset
        look = 0 if finalize else state.schedule.lookahead
        if state.flow is not None:
            return state.flow.render(state.tokens[start:end], state.tokens[end:end + look], final=finalize)
        prompt = state.prompt
        token = torch.tensor([state.tokens[: end + look]], dtype=torch.long)
        streaming = not finalize or state.schedule.causal_final
        mel = self.flow.inference(token, prompt.tokens, prompt.mel, prompt.xvector,
                                  streaming=streaming, finalize=finalize)
        return mel[:, :, start * self.ratio:]  # frames of this hop only

    def _render(self, state: StreamState, end: int, finalize: bool) -> np.ndarray:
        start = state.offset
        mel = self._flow_mel(state, end, finalize)
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
            # copies, not views: a view would keep the whole hop's tensors alive until the next call
            state.mel_cache = mel[:, :, -self.mel_cache_frames:].clone()
            state.source_cache = source[:, :, -self.crossfade:].clone()
            state.speech_cache = speech[:, -self.crossfade:].clone()
            speech = speech[:, : -self.crossfade]
        else:
            state.consumed += end - start
            state.offset = end
        chunk = speech[0].float().numpy()
        state.emitted += chunk.shape[0]
        return chunk


def drained(chunks: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks in order, each leaving the list before it is yielded (nothing here keeps a chunk the
    caller has let go of)."""
    chunks.reverse()
    while chunks:
        yield chunks.pop()
