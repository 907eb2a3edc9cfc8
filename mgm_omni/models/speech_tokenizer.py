"""S3 speech tokenizer v2 (CosyVoice2's ``speech_tokenizer_v2.onnx``): 16 kHz audio -> codes 0..6560 at 25 Hz.

The official model accepts at most 30 s, so a clip is cut into 30 s blocks (480 000 samples), each block gets its
own unpadded whisper 128-bin log-mel (``audio.WHISPER_128``, its own ``max - 8`` floor), and the codes of the blocks
are concatenated (official ``prepare_cosyvoice_tokens`` + ``_extract_speech_token``). One difference: a final
block shorter than one token (640 samples) is dropped, because it cannot hold a whole token and the whisper STFT's
reflect padding rejects pieces of 200 samples or fewer (the official code would fail there).

The ONNX graph is addressed by position, as upstream does: input 0 ``feats`` (1, 128, T) float32, input 1
``feats_length`` (1,) int32, output 0 the codes (1, ceil(T / 4)) of an integer type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.audio import WHISPER_128, log_mel
from mgm_omni.models.onnx_session import OnnxAssetError, open_session

S3_TOKENIZER_FILE = "speech_tokenizer_v2.onnx"
DOWNLOAD_HINT = (
    f"download cosyvoice2/{S3_TOKENIZER_FILE} from the SpeechLM repository "
    "(e.g. wcy1122/MGM-Omni-TTS-2B-0927) and pass its path"
)


class SpeechTokenizerError(ValueError):
    """Audio the tokenizer cannot take, or codes from the ONNX model that break its contract."""


@dataclass(frozen=True)
class S3TokenizerConfig:
    """Blocking and output contract of the S3 tokenizer v2."""

    sample_rate: int = 16000
    block_seconds: float = 30.0  # the official model rejects longer input
    samples_per_token: int = 640  # 25 Hz: 4 whisper frames of 160 samples
    codebook_size: int = 6561  # codes 0..6560
    length_slack: int = 1  # allowed |codes - ceil(T/4)| before the model is judged to be the wrong one

    def __post_init__(self):
        if self.sample_rate != WHISPER_128.sample_rate:
            raise ValueError(f"S3TokenizerConfig.sample_rate must be {WHISPER_128.sample_rate} (the whisper mel's)")
        if not self.samples_per_token > 0 or self.samples_per_token % WHISPER_128.hop_length:
            raise ValueError("S3TokenizerConfig.samples_per_token must be a positive multiple of the mel hop (160)")
        if not self.block_seconds * self.sample_rate >= self.samples_per_token:
            raise ValueError(f"S3TokenizerConfig.block_seconds={self.block_seconds} is shorter than one token")
        if self.codebook_size < 2 or self.length_slack < 0:
            raise ValueError("S3TokenizerConfig needs codebook_size >= 2 and length_slack >= 0")

    @property
    def block_samples(self) -> int:
        return round(self.block_seconds * self.sample_rate)

    @property
    def frames_per_token(self) -> int:
        return self.samples_per_token // WHISPER_128.hop_length


class S3Tokenizer:
    """``speech_tokenizer_v2.onnx`` run through onnxruntime on CPU.

    Args:
        path: the ONNX file (``<SpeechLM repo>/cosyvoice2/speech_tokenizer_v2.onnx``).
        config: blocking and validation settings.
        threads: onnxruntime intra-op threads (1 as upstream).
    """

    def __init__(self, path: str | os.PathLike, config: S3TokenizerConfig | None = None, threads: int = 1):
        self.config = config or S3TokenizerConfig()
        self.path = Path(path)
        self.session = open_session(self.path, "S3 speech tokenizer v2", DOWNLOAD_HINT, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 2 or len(inputs[0].shape) != 3 or not outputs:
            got = [(i.name, i.shape) for i in inputs]
            raise OnnxAssetError(
                f"{self.path} does not look like {S3_TOKENIZER_FILE}: expected inputs feats (1, 128, T) and "
                f"feats_length (1,), got {got}"
            )
        self._feats_name, self._length_name = inputs[0].name, inputs[1].name

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def tokenize(self, wave16k: torch.Tensor) -> torch.Tensor:
        """Codes of a 16 kHz mono clip of any length.

        Args:
            wave16k: (S,) or (1, S) float waveform in [-1, 1] at 16 kHz.
        Returns:
            (1, L) int64 codes in ``0 .. codebook_size - 1``, L ≈ S / 640.
        """
        wave = _mono(wave16k)
        cfg = self.config
        if wave.shape[0] < cfg.samples_per_token:
            raise SpeechTokenizerError(
                f"audio of {wave.shape[0]} samples is shorter than one speech token ({cfg.samples_per_token} samples)"
            )
        codes = []
        for start in range(0, wave.shape[0], cfg.block_samples):
            block = wave[start : start + cfg.block_samples]
            if block.shape[0] < cfg.samples_per_token:
                break  # a tail shorter than one token: see the module docstring
            codes.append(self.tokenize_block(block))
        return torch.cat(codes)[None]  # (1, L)

    def tokenize_block(self, block16k: torch.Tensor) -> torch.Tensor:
        """Codes (n,) int64 of one block of at most ``block_seconds``."""
        cfg = self.config
        block = _mono(block16k)
        if block.shape[0] > cfg.block_samples:
            raise SpeechTokenizerError(
                f"a block of {block.shape[0] / cfg.sample_rate:.2f} s is longer than the tokenizer's "
                f"{cfg.block_seconds:g} s limit; use tokenize() to cut it into blocks"
            )
        feats = log_mel(block, WHISPER_128)  # (128, T), T = S // 160
        n_frames = feats.shape[-1]
        out = self.session.run(
            None,
            {
                self._feats_name: feats[None].numpy().astype(np.float32, copy=False),  # (1, 128, T)
                self._length_name: np.array([n_frames], dtype=np.int32),  # (1,)
            },
        )[0]
        return self._check_codes(np.asarray(out), n_frames)

    def _check_codes(self, out: np.ndarray, n_frames: int) -> torch.Tensor:
        cfg = self.config
        if not np.issubdtype(out.dtype, np.integer):
            raise SpeechTokenizerError(f"{self.path.name} returned {out.dtype} values, expected integer codes")
        codes = out.reshape(-1).astype(np.int64)
        expected = math.ceil(n_frames / cfg.frames_per_token)
        if abs(codes.shape[0] - expected) > cfg.length_slack:
            rate = codes.shape[0] * cfg.sample_rate / (n_frames * WHISPER_128.hop_length)
            raise SpeechTokenizerError(
                f"{self.path.name} returned {codes.shape[0]} codes for {n_frames} mel frames (about {rate:.0f} Hz); "
                f"expected {expected} at 25 Hz: is this the v2 tokenizer?"
            )
        if codes.size and (codes.min() < 0 or codes.max() >= cfg.codebook_size):
            raise SpeechTokenizerError(
                f"{self.path.name} returned codes in [{codes.min()}, {codes.max()}], outside 0..{cfg.codebook_size - 1}"
            )
        return torch.from_numpy(codes)


def _mono(wave: torch.Tensor) -> torch.Tensor:
    wave = torch.as_tensor(wave)
    if wave.dim() == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() != 1 or not wave.is_floating_point():
        raise SpeechTokenizerError(
            f"the speech tokenizer expects a float mono (S,) or (1, S) waveform, got {wave.dtype} {tuple(wave.shape)}"
        )
    if not bool(torch.isfinite(wave).all()):
        raise SpeechTokenizerError("the speech tokenizer input contains NaN or Inf samples")
    return wave.detach().float().cpu()
