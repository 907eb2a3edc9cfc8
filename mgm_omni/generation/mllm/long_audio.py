"""Hour-long audio: 30 s windows encoded in a streaming loop with bounded memory (spec §4.2).

The waveform is cut into ``max(1, ceil(S / W))`` non-overlapping windows of W samples (480 000 at 16 kHz).
The official ``S // W + 1`` adds a phantom all-silence window when S is an exact multiple of W; we do not.
Only the last window is zero-padded; every window still goes through the encoders as a full
(n_mels, 3000) mel, exactly as in training. With ``trim_padding`` the audio tokens of the last window that lie
wholly inside the padding are dropped (off by default, because the official model sees them).

A 0.1 s input still gives one full window (150 tokens for k = 5, or 1 with ``trim_padding``); empty or
non-mono input raises ``LongAudioError``.

Memory: only ``batch_windows`` windows of samples, mel and encoder activations are alive at a time; the output
embeddings are written into one preallocated tensor when the length is known (a tensor input, or
``n_samples`` given with a chunked source), so peak memory is that tensor plus a constant, whatever the
duration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mgm_omni.audio import WHISPER_128, MelConfig, log_mel
from mgm_omni.models.audio_encoder import DualAudioTower
from mgm_omni.models.projector import DualMLPSpeechProjector

AudioSource = torch.Tensor | np.ndarray | Iterable


def tower_mel(tower: DualAudioTower) -> MelConfig:
    """The Whisper log-mel the tower's encoders take: ``WHISPER_128`` with their ``num_mel_bins`` (80 for
    Whisper base / tiny.en, 128 for the official Qwen2-Audio / Whisper-large-v3 towers)."""
    n_mels = tower.main_cfg.num_mel_bins
    return WHISPER_128 if n_mels == WHISPER_128.n_mels else dataclasses.replace(WHISPER_128, n_mels=n_mels)


class LongAudioError(ValueError):
    """Audio that cannot be windowed or encoded: empty, not mono, non-finite, or mismatching the encoders."""


@dataclass(frozen=True)
class WindowGeometry:
    """How samples map to windows, encoder frames and LLM tokens.

    Attributes:
        window_samples: W, samples per window (480 000 = 3000 mel frames × hop 160).
        main_frames: main-encoder frames per window (750 at 25 Hz).
        ds_rate: k, main frames stacked into one LLM token.
    """

    window_samples: int
    main_frames: int
    ds_rate: int

    def __post_init__(self) -> None:
        if min(self.window_samples, self.main_frames, self.ds_rate) <= 0 or self.main_frames < self.ds_rate:
            raise LongAudioError(f"invalid window geometry {self}")

    @classmethod
    def of(cls, tower: DualAudioTower, projector: DualMLPSpeechProjector,
           mel_cfg: MelConfig) -> WindowGeometry:
        main = tower.main_cfg
        if mel_cfg.n_mels != main.num_mel_bins:
            raise LongAudioError(f"mel front end gives {mel_cfg.n_mels} bins but the encoders take "
                                 f"{main.num_mel_bins}")
        return cls(main.input_frames * mel_cfg.hop_length, main.output_positions, projector.cfg.ds_rate)

    @property
    def tokens_per_window(self) -> int:
        return self.main_frames // self.ds_rate

    def window_count(self, n_samples: int) -> int:
        """``max(1, ceil(S / W))``: an exact multiple of W gets no extra silent window."""
        if n_samples <= 0:
            raise LongAudioError("audio is empty: nothing to encode")
        return max(1, math.ceil(n_samples / self.window_samples))

    def kept_tokens(self, valid_samples: int, trim_padding: bool) -> int:
        """Tokens kept from a window holding ``valid_samples`` real samples (the rest is zero padding).

        Token j spans samples [j·k·W/F, (j+1)·k·W/F) (F main frames per window); with ``trim_padding``
        the tokens that start at or after ``valid_samples`` (wholly inside the padding) are dropped.
        """
        if not trim_padding:
            return self.tokens_per_window
        span = self.ds_rate * self.window_samples  # token length in samples, times F
        return min(self.tokens_per_window, -(-valid_samples * self.main_frames // span))


@dataclass
class AudioTokens:
    """Projected audio tokens of one input, windows concatenated.

    Attributes:
        embeddings: (n_tokens, llm_width) tokens to splice at the ``<speech>`` placeholder.
        window_tokens: tokens kept per window (all ``tokens_per_window`` unless trimmed).
        n_samples: input length in samples.
    """

    embeddings: torch.Tensor
    window_tokens: list[int]
    n_samples: int

    @property
    def n_windows(self) -> int:
        return len(self.window_tokens)


def iter_windows(audio: AudioSource, window_samples: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield ``(window (W,) float32, valid_samples)``; only the last window is zero-padded.

    ``audio`` is a mono waveform (a 1-D tensor or array, sliced without copying the whole input) or an
    iterable of 1-D chunks of any sizes (e.g. blocks read from a file), re-blocked into windows as they
    arrive.
    """
    if isinstance(audio, (torch.Tensor, np.ndarray)):
        wave = torch.as_tensor(audio)
        _check_chunk(wave, finite=False)  # finiteness per window: no whole-length temporary
        n = wave.shape[0]
        if n == 0:
            raise LongAudioError("audio is empty: nothing to encode")
        for start in range(0, n, window_samples):
            piece = wave[start:start + window_samples]
            _check_chunk(piece)
            yield _padded(piece, window_samples), piece.shape[0]
        return
    if isinstance(audio, (str, bytes, os.PathLike)):
        raise LongAudioError("long-audio input must be samples, not a path: "
                             "read it with mgm_omni.audio.load_audio")
    buf, fill, seen = torch.zeros(window_samples), 0, 0
    for chunk in audio:
        chunk = torch.as_tensor(chunk)
        _check_chunk(chunk)
        seen += chunk.shape[0]
        while chunk.shape[0]:
            take = min(window_samples - fill, chunk.shape[0])
            buf[fill:fill + take] = chunk[:take]
            fill, chunk = fill + take, chunk[take:]
            if fill == window_samples:
                yield buf, window_samples
                buf, fill = torch.zeros(window_samples), 0
    if seen == 0:
        raise LongAudioError("audio is empty: nothing to encode")
    if fill:
        yield buf, fill


def _check_chunk(x: torch.Tensor, finite: bool = True) -> None:
    if x.dim() != 1:
        raise LongAudioError(f"long-audio input must be mono 16 kHz samples of shape (S,), "
                             f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise LongAudioError(f"long-audio input must be float samples in [-1, 1], got {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        raise LongAudioError("long-audio input contains NaN or Inf samples")


def _padded(piece: torch.Tensor, length: int) -> torch.Tensor:
    out = torch.zeros(length)
    out[: piece.shape[0]] = piece
    return out


def stream_audio_tokens(audio: AudioSource, tower: DualAudioTower, projector: DualMLPSpeechProjector, *,
                        mel_cfg: MelConfig | None = None, batch_windows: int = 1,
                        trim_padding: bool = False) -> Iterator[tuple[torch.Tensor, list[int], list[int]]]:
    """Encode ``audio`` window batch by window batch.

    Yields:
        ``(tokens (sum(kept), llm_width), kept, valid)`` per batch of up to ``batch_windows`` windows:
        ``kept`` lists the tokens kept from each window of the batch and ``valid`` its real (unpadded)
        samples.
    """
    if batch_windows < 1:
        raise LongAudioError(f"batch_windows must be >= 1, got {batch_windows}")
    trim_padding = trim_padding or projector.cfg.trim_padding  # a brain trained without them never reads them
    mel_cfg = mel_cfg or tower_mel(tower)
    geo = WindowGeometry.of(tower, projector, mel_cfg)
    batch: list[tuple[torch.Tensor, int]] = []
    for window in iter_windows(audio, geo.window_samples):
        batch.append(window)
        if len(batch) == batch_windows:
            yield _encode_batch(batch, tower, projector, mel_cfg, geo, trim_padding)
            batch = []
    if batch:
        yield _encode_batch(batch, tower, projector, mel_cfg, geo, trim_padding)


def _encode_batch(batch, tower, projector, mel_cfg, geo, trim_padding):
    # Entered per batch, not around the generator's yields, so the caller's grad mode is never touched;
    # no_grad rather than inference_mode so callers may modify the returned tensors in place.
    with torch.no_grad():
        waves = torch.stack([w for w, _ in batch])  # (B, W)
        device = tower.speech_tower.conv1.weight.device
        features = log_mel(waves.to(device), mel_cfg)  # (B, n_mels, 3000)
        main, aux = tower(features)  # (B, 750, d_main), (B, 1500, d_aux)
        dtype = projector.linear1.weight.dtype
        tokens = projector(main.to(dtype), aux.to(dtype))  # (B, tokens_per_window, H)
        valid = [v for _, v in batch]
        kept = [geo.kept_tokens(v, trim_padding) for v in valid]
        if any(k != geo.tokens_per_window for k in kept):
            return torch.cat([t[:k] for t, k in zip(tokens, kept)]), kept, valid
        return tokens.flatten(0, 1), kept, valid


def encode_long_audio(audio: AudioSource, tower: DualAudioTower, projector: DualMLPSpeechProjector, *,
                      mel_cfg: MelConfig | None = None, batch_windows: int = 1, trim_padding: bool = False,
                      n_samples: int | None = None) -> AudioTokens:
    """Audio tokens for a waveform of any length (two hours go through in one call, untruncated).

    Args:
        audio: 16 kHz mono samples, a 1-D tensor/array or an iterable of 1-D chunks.
        tower: the dual encoder; projector: the dual projector (its ``speech_norm`` applies the L2 norm).
        mel_cfg: the encoders' front end (default :func:`tower_mel`: Whisper's, with the towers' mel bins).
        batch_windows: windows encoded together; memory grows with it, not with the audio length.
        trim_padding: drop the last window's tokens that lie wholly inside its zero padding (always done for a
            projector whose config says ``trim_padding``: a brain trained without them).
        n_samples: the length of an iterable source when known (e.g. from a file header), so the output can be
            preallocated; the source must then deliver exactly that many samples. Without it the blocks are
            joined at the end, which briefly holds the embeddings twice.
    Returns:
        ``AudioTokens`` with (n_tokens, llm_width) embeddings, e.g. 120 · (750 // k) tokens per hour.
    """
    mel_cfg = mel_cfg or tower_mel(tower)
    if isinstance(audio, (torch.Tensor, np.ndarray)):
        n_samples = len(audio) if torch.as_tensor(audio).dim() == 1 else None  # a bad shape raises below
    stream = stream_audio_tokens(audio, tower, projector, mel_cfg=mel_cfg, batch_windows=batch_windows,
                                 trim_padding=trim_padding)
    kept_all: list[int] = []
    seen = 0
    if n_samples is None:
        blocks = []
        for block, kept, valid in stream:
            blocks.append(block)
            kept_all += kept
            seen += sum(valid)
        return AudioTokens(torch.cat(blocks), kept_all, seen)
    geo = WindowGeometry.of(tower, projector, mel_cfg)
    rows = geo.window_count(n_samples) * geo.tokens_per_window
    out: torch.Tensor | None = None
    filled = 0
    for block, kept, valid in stream:
        if out is None:  # allocated once the first block shows width, dtype and device
            out = torch.empty(rows, block.shape[1], dtype=block.dtype, device=block.device)
        seen += sum(valid)
        if seen > n_samples:
            raise LongAudioError(f"audio source delivered more than the announced n_samples={n_samples}")
        out[filled:filled + block.shape[0]] = block
        filled += block.shape[0]
        kept_all += kept
    if seen != n_samples:
        raise LongAudioError(f"audio source delivered {seen} samples, not the announced "
                             f"n_samples={n_samples}")
    assert out is not None  # iter_windows raises on empty input
    return AudioTokens(out[:filled], kept_all, seen)
