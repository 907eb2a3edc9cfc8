"""Offline multi-speaker EN/ZH speech corpus: allowed voices only, manifests, splits, long-form, clone pairs.

``build_corpus(CorpusConfig(...))`` renders; ``Manifest`` reads and writes the JSONL manifests;
``corpus_stats`` / ``format_stats`` summarise them. Voices are checked against the allow-list in ``voices``.
"""

from .build import BuildReport, build_corpus
from .config import ConfigError, CorpusConfig, load_config
from .manifest import Manifest, ManifestError, ManifestRow, PairRow, load_audio
from .stats import corpus_stats, format_stats
from .voices import ALLOWED, RESERVED, VoiceError, parse_voice


__all__ = ["ALLOWED", "RESERVED", "BuildReport", "ConfigError", "CorpusConfig", "Manifest", "ManifestError", "ManifestRow",
           "PairRow", "VoiceError", "build_corpus", "corpus_stats", "format_stats", "load_audio", "load_config",
           "parse_voice"]
