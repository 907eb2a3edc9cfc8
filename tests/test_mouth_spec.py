"""A mouth directory describes itself: official defaults from config.json + cosyvoice2.yaml, mouth.json
overrides, and clear errors for what does not fit together."""

from __future__ import annotations

import json

import pytest

from mgm_omni.config import ConfigError, SpeechLMConfig
from mgm_omni.config.mouth import MOUTH_FILE, S3_BLANK_CODES, MouthSpec

TINY_LM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "tts_adapter_config": "(1,64,4_2,128)"}
YAML = """\
sample_rate: 22050
spk_embed_dim: 256
token_frame_rate: 50
token_mel_ratio: 2
chunk_size: 20
flow: !new:x.Flow
    vocab_size: {codes}
hift: !new:x.HiFT
    in_channels: 80
"""


def _mouth(tmp_path, mouth=None, codes=6561, k=4, pre_pad=None, yaml=True):
    size = codes + 2
    cfg = SpeechLMConfig(**TINY_LM, tokenizer_speech_size=size, speech_token_count=k,
                         vocab_size=151672 + k * size, speech_token_pre_pad=pre_pad)
    cfg.save(tmp_path / "config.json")
    if yaml:
        (tmp_path / "cosyvoice2").mkdir(exist_ok=True)
        (tmp_path / "cosyvoice2" / "cosyvoice2.yaml").write_text(YAML.format(codes=codes))
    if mouth is not None:
        (tmp_path / MOUTH_FILE).write_text(json.dumps(mouth))
    return tmp_path


def test_official_directory_gets_the_release_values(tmp_path):
    spec = MouthSpec.from_dir(_mouth(tmp_path, yaml=False))
    assert spec == MouthSpec()  # no mouth.json, no yaml: the official defaults
    assert (spec.sample_rate, spec.token_rate, spec.slots, spec.delay_rows) == (24000, 25.0, 4, 4)
    assert (spec.speech_eos, spec.speech_pad, spec.silence_code) == (6561, 6562, 6486)
    assert spec.blank_codes == S3_BLANK_CODES and len(spec.blank_codes) == 113 and 6486 in spec.blank_codes
    assert spec.row_seconds == pytest.approx(0.16) and spec.samples_per_token == 960


def test_values_come_from_config_and_decoder_yaml(tmp_path):
    spec = MouthSpec.from_dir(_mouth(tmp_path, k=2, pre_pad=3))
    assert (spec.slots, spec.delay_rows) == (2, 3)
    assert (spec.sample_rate, spec.token_rate, spec.stream_grid, spec.xvector_dim) == (22050, 50.0, 20, 256)
    assert spec.row_seconds == pytest.approx(0.04)


def test_mouth_json_declares_an_own_stack(tmp_path):
    mouth = {"text_frontend": "own-bpe", "g2p": "espeak-en", "blank_codes": [0, 1, 2], "silence_code": 1,
             "token2wav": "flow-hifigan", "speech_tokenizer": "tiny-hash", "speaker_encoder": "tiny-dvector",
             "default_voice": "voice", "dtype": "float32"}
    spec = MouthSpec.from_dir(_mouth(tmp_path, mouth, codes=1024))
    assert spec.speech_codes == 1024 and spec.speech_eos == 1024 and spec.speech_pad == 1025
    assert spec.blank_codes == frozenset({0, 1, 2}) and spec.silence_code == 1 and spec.vocoder == "hifigan"
    assert spec.source == mouth and spec.sample_rate == 22050
    # saved and read back: the same spec
    spec.save(tmp_path / MOUTH_FILE, keys=list(mouth))
    assert MouthSpec.from_dir(tmp_path) == spec


@pytest.mark.parametrize("mouth, codes, match", [
    ({"token_rat": 25}, 6561, "unknown key 'token_rat' .*did you mean 'token_rate'"),
    ({}, 1024, "must declare its own"),  # a non-S3 codebook with the S3 blank list
    ({"blank_codes": [1], "silence_code": 2000}, 1024, "silence_code 2000"),
    ({"slots": 2}, 6561, "slots disagree"),
    ({"g2p": "espeak"}, 6561, "g2p needs text_frontend 'own-bpe'"),
    ({"token2wav": "vocos"}, 6561, "token2wav must be one of"),
    ({"sample_rate": 24000}, 6561, "sample_rate 22050 but the mouth declares 24000"),
])
def test_bad_declarations_are_refused(tmp_path, mouth, codes, match):
    with pytest.raises(ConfigError, match=match):
        MouthSpec.from_dir(_mouth(tmp_path, mouth, codes=codes))


def test_delay_rows_must_agree_with_the_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="delay_rows disagree"):
        MouthSpec.from_dir(_mouth(tmp_path, {"delay_rows": 2}, pre_pad=4))
    assert MouthSpec.from_dir(_mouth(tmp_path, {"delay_rows": 2})).delay_rows == 2  # config.json is silent


def test_flow_codebook_must_match_the_speechlm(tmp_path):
    root = _mouth(tmp_path, {"blank_codes": [1], "silence_code": 1}, codes=1024)
    (root / "cosyvoice2" / "cosyvoice2.yaml").write_text(YAML.format(codes=6561))
    with pytest.raises(ConfigError, match="flow reads 6561 codes but the SpeechLM writes 1024"):
        MouthSpec.from_dir(root)
