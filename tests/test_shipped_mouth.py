"""The mouth shipped in the package (mgm_omni/hub/assets/mouth) is the default of every command: it loads with
its checksums checked, a damaged copy is refused by name, greedy synthesis is deterministic, and the README's
first command speaks with it in a fresh process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mgm_omni.hub.own_mouth_shipped import (
    SHIPPED_MOUTH_DIR,
    SHIPPED_MOUTH_NAME,
    ShippedMouthError,
    shipped_mouth_available,
    shipped_mouth_dir,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not shipped_mouth_available(), reason=f"no mouth assembled in {SHIPPED_MOUTH_DIR}")]


@pytest.fixture(scope="module")
def pipe():
    from mgm_omni.generation.pipeline import TTSPipeline

    return TTSPipeline.load(shipped_mouth_dir(), temperature=0.0, max_rows=16)


def test_the_default_mouth_is_the_shipped_one_checked_and_small(monkeypatch):
    from mgm_omni.checkpoint.manifest import verify_checksums
    from mgm_omni.cli.common import OWN_MOUTH
    from mgm_omni.config.mouth import MouthSpec
    from mgm_omni.hub import default_mouth, resolve_mouth
    from mgm_omni.hub import resolve as resolve_module

    monkeypatch.setattr(resolve_module, "cached_on_hub", lambda repo: False)  # no official checkpoint here
    mouth = resolve_mouth()
    assert (mouth.name, mouth.path, mouth.builtin) == (SHIPPED_MOUTH_NAME, SHIPPED_MOUTH_DIR, False) == (
        OWN_MOUTH, SHIPPED_MOUTH_DIR, False)
    files = json.loads((SHIPPED_MOUTH_DIR / "checksums.json").read_text())["files"]
    assert verify_checksums(SHIPPED_MOUTH_DIR) == len(files) >= 12
    assert sum(e["bytes"] for e in files.values()) <= 50e6
    spec = MouthSpec.from_dir(SHIPPED_MOUTH_DIR)
    assert (spec.token2wav, spec.speech_tokenizer, spec.speaker_encoder, spec.sample_rate) == (
        "flow-hifigan", "whisper-units", "ge2e", 22050)
    card = (SHIPPED_MOUTH_DIR / "MODEL_CARD.md").read_text()
    for section in ("## Training data", "## Measured quality", "## Limits", "## Retrain", "## Storage dtype check"):
        assert section in card
    monkeypatch.setattr(resolve_module, "shipped_mouth_available", lambda: False)  # an install without it
    assert default_mouth() == "tiny-random" and resolve_mouth("tiny-random").builtin


def test_the_bundled_voice_is_the_alpha_preset_with_its_transcript():
    from mgm_omni.engine.voices import PRESET_DIR

    preset = json.loads((PRESET_DIR / "presets.json").read_text())["alpha"]
    voice = json.loads((SHIPPED_MOUTH_DIR / "voice" / "voice.json").read_text())
    assert voice["text"] == preset["text"] and "jf_alpha" in voice["description"]
    assert voice["seconds"] == pytest.approx(sf.info(str(PRESET_DIR / preset["file"])).duration, abs=1e-3)


def test_a_damaged_or_missing_mouth_is_refused_with_a_clear_error(tmp_path):
    copy = tmp_path / "mouth"
    shutil.copytree(SHIPPED_MOUTH_DIR, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(ShippedMouthError, match=r"damaged: .*model.safetensors \(changed\).*Reinstall mgm-omni"):
        shipped_mouth_dir(copy)
    (copy / "checksums.json").unlink()
    with pytest.raises(ShippedMouthError, match="no assembled mouth in .*--model tiny-random"):
        shipped_mouth_dir(copy)


def test_greedy_synthesis_is_deterministic(pipe):
    first, tokens = [], []
    first = list(pipe.stream("Hello there.", on_row=lambda row: tokens.extend(row.tokens)))
    again = pipe.synthesize("Hello there.")
    audio = np.concatenate(first)
    assert len(tokens) == pipe.last.tokens > 0 and np.array_equal(audio, again.audio)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


def test_storing_in_half_precision_is_measured_against_float32(tmp_path):
    """Two paths: a mouth compared with itself agrees exactly; the float16 copy's tensors are float16."""
    from safetensors import safe_open

    from mgm_omni.hub.own_mouth import assemble_own_mouth
    from mgm_omni.hub.own_mouth_check import compare_storage
    from mgm_omni.hub.own_mouth_tiny import write_tiny_parts

    try:
        parts = write_tiny_parts(tmp_path / "parts")
    except Exception as exc:
        if "espeak" in str(exc).lower():
            pytest.skip(f"G2P unavailable: {exc}")
        raise
    fp32 = assemble_own_mouth(tmp_path / "fp32", parts)
    half = assemble_own_mouth(tmp_path / "half", parts, store={"speechlm": "float16", "flow": "float16"})
    with safe_open(str(half / "model.safetensors"), "pt") as f:  # matrices in float16, norm weights in float32
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {d for k, d in dtypes.items() if k.endswith("norm.weight")} == {"F32"}
    assert dtypes["model.embed_tokens.weight"] == dtypes["model.layers.0.mlp.down_proj.weight"] == "F16"
    heard = []
    same = compare_storage(fp32, fp32, ["The birch canoe slid."], max_rows=12,
                           transcriber=lambda w: heard.append(w) or f"{w.shape[0]} samples")
    first = same.sentences[0]
    assert first.identical and same.agreement == 1.0 and first.audio_rel_diff == 0.0
    assert torch.equal(heard[0], heard[1]) and first.reference_heard == first.stored_heard == f"{len(heard[0])} samples"
    check = compare_storage(fp32, half, ["The birch canoe slid."], max_rows=12)
    assert 0.0 <= check.agreement <= 1.0 and "sentences decode to identical speech tokens" in check.markdown()
    with pytest.raises(Exception, match="store: parts are"):
        assemble_own_mouth(tmp_path / "bad", parts, store={"vocoder": "float16"})


def test_the_readme_command_speaks_with_the_shipped_mouth(tmp_path):
    """The README's first command (the Makefile's demo text) in a fresh process, on a short text."""
    make = (REPO / "Makefile").read_text()
    demo = re.search(r"^DEMO_TEXT = (.+?)(?<!\\)$", make, re.S | re.M).group(1).replace("\\\n", "")
    assert 'mgm-omni tts "$(DEMO_TEXT)" --out outputs/demo.wav' in make
    readme = (REPO / "README.md").read_text()
    assert f'mgm-omni tts "{demo[:60]}' in readme and "--out outputs/demo.wav" in readme
    out = tmp_path / "demo.wav"
    env = dict(os.environ, MGM_OMNI_CACHE=str(tmp_path / "cache"), MGM_OMNI_PROGRESS="0")
    run = subprocess.run([sys.executable, "-m", "mgm_omni.cli", "tts", "Hello there.", "--out", str(out),
                          "--max-rows", "16", "--threads", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith(f"speaking 12 characters with the mouth '{SHIPPED_MOUTH_NAME}'")
    assert "in the bundled voice" in lines[0] and "loaded in" in lines[0]
    assert f"s of audio -> {out}" in lines[-1] and "RTF" in lines[-1] and "first packet" in lines[-1]
    wave, sr = sf.read(out)
    assert sr == 22050 and wave.shape[0] > sr // 4


def test_a_clip_without_transcript_is_transcribed_then_cloned(tmp_path, capsys):
    pytest.importorskip("faster_whisper")
    from mgm_omni.cli import main
    from mgm_omni.engine.voices import PRESET_DIR

    out = tmp_path / "clone.wav"
    assert main(["tts", "Hi.", "--ref-audio", str(PRESET_DIR / "rms.flac"), "--out", str(out),
                 "--temperature", "0", "--max-rows", "8", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    heard = re.search(r"transcribed by Whisper base as: '(.+)'", captured.err)
    assert heard and "smooth planks" in heard.group(1).lower()
    assert f"the voice of {PRESET_DIR / 'rms.flac'}" in captured.out and sf.read(out)[1] == 22050
    assert main(["voices", "add", "bob", "--audio", str(PRESET_DIR / "rms.flac"),
                 "--voices-dir", str(tmp_path / "voices")]) == 0
    assert "transcribed by Whisper base as" in capsys.readouterr().out
    stored = json.loads(next((tmp_path / "voices").rglob("bob/voice.json")).read_text())
    assert "smooth planks" in stored["text"].lower()
