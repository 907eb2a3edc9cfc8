"""Audio front end: load any common file, mix to mono, resample, one parameterised log-mel, Kaldi fbank."""

from mgm_omni.audio.io import DEFAULT_MAX_SECONDS, AudioError, load_audio, resample
from mgm_omni.audio.mel import COSYVOICE2_24K, HIFIGAN_22K, WHISPER_128, MelConfig, log_mel, mel_filterbank, whisper_features

__all__ = [
    "COSYVOICE2_24K", "DEFAULT_MAX_SECONDS", "HIFIGAN_22K", "WHISPER_128", "AudioError", "MelConfig",
    "load_audio", "log_mel", "mel_filterbank", "resample", "whisper_features",
]
