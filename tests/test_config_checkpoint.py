"""Configs round-trip with official config.json files; checkpoint I/O in every supported format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from golden import SPEECHLM_CONFIG, golden_params, speechlm_checkpoint

from mgm_omni.checkpoint import (
    CheckpointError,
    load_into,
    load_state_dict,
    resolve_pretrained,
    save_state_dict,
    stream_into,
)
from mgm_omni.config import (
    ConfigError,
    DecoderConfig,
    OmniConfig,
    SpeechLMConfig,
    load_config,
    parse_adapter_string,
)
from mgm_omni.config.cosyvoice import CosyVoice2Config, read_hyperpyyaml, strip_tags
from mgm_omni.models.qwen import CausalLM

OMNI_JSON = {  # the shape of an MGM-Omni-7B config.json (spec §4.8), with an unknown field
    "architectures": ["MGMOmniForCausalLM"], "model_type": "MGMOmni", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "vocab_size": 152064, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 128000,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "tie_word_embeddings": False,
    "mm_speech_tower": "wcy1122/Dual-Qwen2A-7B-Encoder", "speech_tower_aux": "BELLE-2/Belle-whisper-large-v3-zh",
    "mm_speech_projector_type": "dual_mlp", "speech_encoder_ds_rate": 5, "speech_encoder_hidden_size": 2560,
    "speech_norm": True, "vision_config": {"depth": 32, "hidden_size": 1280}, "asr_align": False,
    "some_future_field": {"nested": [1, 2]},
}


@pytest.mark.parametrize("gdir", golden_params(SPEECHLM_CONFIG))
def test_speechlm_config_round_trip(gdir, tmp_path):
    src = speechlm_checkpoint(gdir) / "config.json"
    data = json.loads(src.read_text())
    cfg = load_config(src.parent)
    assert isinstance(cfg, SpeechLMConfig)
    assert cfg.to_dict() == data and list(cfg.to_dict()) == list(data)
    assert cfg.extra["architectures"] == ["MGMTTSForCausalLM"]  # unknown keys are kept
    cfg.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text()) == data
    adapter = cfg.adapter_config()
    spec = parse_adapter_string(data["tts_adapter_config"])
    assert adapter.num_hidden_layers == spec["num_hidden_layers"]
    assert adapter.num_key_value_heads == spec["num_key_value_heads"]
    assert adapter.dim_per_head == data["head_dim"]


def test_omni_config_round_trip_keeps_unknown_keys():
    cfg = OmniConfig.from_dict(OMNI_JSON)
    assert cfg.mrope_section == (16, 24, 24)
    assert cfg.aux_hidden_size == 1280
    assert cfg.extra["some_future_field"] == {"nested": [1, 2]}
    assert cfg.to_dict() == OMNI_JSON


def test_full_size_speechlm_shapes():
    cfg = SpeechLMConfig(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                         num_key_value_heads=8, head_dim=128, tts_adapter_config="(6,1024,16_2,3072)")
    assert cfg.vocab_size == 177924 and cfg.text_size == 151672
    assert (cfg.speech_eos, cfg.speech_pad, cfg.delay_rows) == (6561, 6562, 4)
    assert parse_adapter_string("(6,2560,32_4,9728)")["num_key_value_heads"] == 8


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(num_attention_heads=6, num_key_value_heads=4), "multiple of"),
        (dict(vocab_size=1000), "vocab_size 1000"),
        (dict(tts_adapter_config="(6,512,16,3072)"), "must equal hidden_size"),
        (dict(tts_adapter_config="6,1024"), "tts_adapter_config"),
        (dict(tts_adapter_type="llama"), "qwen3"),
        (dict(hidden_size=-3), "positive integer"),
    ],
)
def test_invalid_values_raise_one_line_errors(bad, message):
    with pytest.raises(ConfigError, match=message) as info:
        SpeechLMConfig(**{**dict(hidden_size=1024, head_dim=128), **bad})
    assert "\n" not in str(info.value)


def test_unknown_key_is_a_clear_error_where_strict():
    cfg = DecoderConfig()
    with pytest.raises(ConfigError, match=r"unknown config key 'hiden_size' .*did you mean 'hidden_size'") as info:
        cfg.replace(hiden_size=8)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        SpeechLMConfig.from_dict({"model_type": "MGMTTS", "bogus": 1}, strict=True)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="unsupported model_type 'llama'"):
        load_config(tmp_path)


@pytest.mark.parametrize("gdir", golden_params("full_size/cosyvoice2_full.yaml"))
def test_cosyvoice_yaml_matches_resolved_kwargs(gdir):
    yaml_path = gdir / "full_size" / "cosyvoice2_full.yaml"
    cfg = CosyVoice2Config.from_yaml(yaml_path)
    assert (cfg.sample_rate, cfg.token_frame_rate, cfg.token_mel_ratio) == (24000, 25, 2)
    assert cfg.samples_per_token == 960 and cfg.mel_frame_rate == 50
    resolved = json.loads((gdir / "full_size" / "cosyvoice2_full_config.json").read_text())
    flow = strip_tags(cfg.flow)
    assert {k: flow[k] for k in resolved["flow"]["kwargs"]} == resolved["flow"]["kwargs"]
    est = strip_tags(cfg.flow["decoder"]["estimator"])
    assert est["static_chunk_size"] == 50  # `!ref <chunk_size> * <token_mel_ratio>` evaluated
    assert cfg.flow["decoder"]["estimator"]["_target_"].endswith("CausalConditionalDecoder")


def test_hyperpyyaml_bad_reference(tmp_path):
    (tmp_path / "x.yaml").write_text("a: !ref <missing>\n")
    with pytest.raises(ConfigError, match="'missing' not found"):
        read_hyperpyyaml(tmp_path / "x.yaml")


def _tiny_lm(tie: bool) -> CausalLM:
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return CausalLM(cfg)


@pytest.mark.parametrize("shard_bytes", [None, 3000])
def test_safetensors_round_trip_single_and_sharded(tmp_path, shard_bytes):
    model = _tiny_lm(tie=True)
    out = save_state_dict(model.state_dict(), tmp_path, max_shard_bytes=shard_bytes)
    if shard_bytes:
        assert out.name == "model.safetensors.index.json"
        assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    state = load_state_dict(tmp_path)
    assert "lm_head.weight" not in state  # tied weights are written once
    fresh = _tiny_lm(tie=True)
    torch.nn.init.zeros_(fresh.model.embed_tokens.weight)
    load_into(fresh, state, tied=[("lm_head.weight", "model.embed_tokens.weight")])
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    ids = torch.arange(10)[None]
    assert torch.equal(fresh(ids), model(ids))


@pytest.mark.parametrize("shard_bytes", [None, 3000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_load_equals_the_whole_state_load(tmp_path, shard_bytes, dtype):
    model = _tiny_lm(tie=True)
    save_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, tmp_path,
                    max_shard_bytes=shard_bytes)
    tied = [("lm_head.weight", "model.embed_tokens.weight")]
    whole, streamed = _tiny_lm(tie=True).to(dtype), _tiny_lm(tie=True).to(dtype)
    for net in (whole, streamed):
        for p in net.parameters():
            torch.nn.init.zeros_(p)
    load_into(whole, load_state_dict(tmp_path), tied=tied)
    stream_into(streamed, tmp_path, tied=tied)  # bf16 file: read in place (bf16) or through a temporary (fp32)
    assert streamed.lm_head.weight is streamed.model.embed_tokens.weight
    for (name, a), b in zip(whole.state_dict().items(), streamed.state_dict().values()):
        assert a.dtype == b.dtype == dtype and torch.equal(a, b), name
    assert torch.equal(streamed.model.norm.weight, model.model.norm.weight.to(torch.bfloat16).to(dtype))


def _mapped_from(tensor: torch.Tensor, path) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` (/proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high and rest and rest[-1] == str(path):
            return True
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps (Linux)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_mapped_embedding_tables_are_the_file_and_never_write_it(tmp_path, dtype):
    """``map_embeddings``: a table stored in the model's dtype is a copy-on-write map of the file (equal to the
    read load, the file unchanged after the table is written); another dtype is read as before."""
    model = _tiny_lm(tie=False)
    out = save_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, tmp_path)
    before = out.read_bytes()
    read, mapped = _tiny_lm(tie=False).to(dtype), _tiny_lm(tie=False).to(dtype)
    stream_into(read, tmp_path)
    stream_into(mapped, tmp_path, map_embeddings=True)
    table = mapped.model.embed_tokens.weight
    assert isinstance(table, torch.nn.Parameter) and table.requires_grad
    assert _mapped_from(table, out.resolve()) == (dtype == torch.bfloat16)
    assert not _mapped_from(mapped.lm_head.weight, out.resolve())  # only embedding tables are mapped
    ids = torch.arange(10)[None]
    assert torch.equal(mapped(ids), read(ids))
    with torch.no_grad():
        table.zero_()  # private pages: the model changes, the file does not
    assert out.read_bytes() == before and not torch.equal(mapped(ids), read(ids))


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/self/maps (Linux)")
def test_a_tied_head_stays_tied_when_its_table_is_mapped(tmp_path):
    """A tied model saved with one table: after a mapped load the head is the (mapped) table again, so training
    the loaded model keeps them one tensor; a file with its own, different head keeps both."""
    model = _tiny_lm(tie=True)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_state_dict(state, tmp_path / "tied")
    loaded = _tiny_lm(tie=True)
    stream_into(loaded, tmp_path / "tied", tied=[("lm_head.weight", "model.embed_tokens.weight")],
                map_embeddings=True)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    own_head = {**state, "lm_head.weight": model.lm_head.weight.detach() + 1.0}
    save_state_dict(own_head, tmp_path / "own")
    untied = _tiny_lm(tie=True)
    stream_into(untied, tmp_path / "own", tied=[("lm_head.weight", "model.embed_tokens.weight")],
                map_embeddings=True)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert torch.equal(untied.lm_head.weight, own_head["lm_head.weight"])


def test_streamed_load_refuses_what_does_not_fit_or_is_truncated(tmp_path):
    model = _tiny_lm(tie=False)
    state = model.state_dict()
    state.pop("model.norm.weight")
    state["extra.thing"] = torch.zeros(1)
    save_state_dict(state, tmp_path / "bad")
    with pytest.raises(CheckpointError, match=r"1 missing .*1 unexpected"):
        stream_into(_tiny_lm(tie=False), tmp_path / "bad")
    out = save_state_dict(model.state_dict(), tmp_path / "cut")
    out.write_bytes(out.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        stream_into(_tiny_lm(tie=False), out)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        stream_into(_tiny_lm(tie=False), tmp_path / "junk.safetensors")


def test_pt_state_dict_weights_only_and_prefix(tmp_path):
    model = _tiny_lm(tie=False)
    torch.save({"generator": {f"generator.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.pt")
    state = load_state_dict(tmp_path / "m.pt", strip_prefix="generator.")
    fresh = _tiny_lm(tie=False)
    load_into(fresh, state)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    # pickled objects other than tensors are refused (weights_only=True)
    torch.save({"w": torch.zeros(1), "obj": object.__new__(_Pickled)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "evil.pt")


class _Pickled:
    pass


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "bad.safetensors")
    model = _tiny_lm(tie=False)
    state = model.state_dict()
    state.pop("model.norm.weight")
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    state["extra.thing"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing .*1 unexpected .*1 with wrong shape"):
        load_into(_tiny_lm(tie=False), state)


def test_from_pretrained_offline_names_repo_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError) as info:
        resolve_pretrained("wcy1122/MGM-Omni-TTS-2B-0927", allow_patterns=["*.json", "*.safetensors"])
    msg = str(info.value)
    assert "wcy1122/MGM-Omni-TTS-2B-0927" in msg and "*.safetensors" in msg and "download" in msg
    assert "\n" not in msg
    local = tmp_path / "ckpt"
    local.mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        resolve_pretrained(local)
    (local / "config.json").write_text("{}")
    assert resolve_pretrained(os.fspath(local)) == local


@pytest.mark.parametrize("gdir", golden_params("full_size/cosyvoice2_full.yaml"))
def test_cosyvoice_yaml_to_resolved_kwargs(gdir):
    from mgm_omni.config.cosyvoice import to_resolved

    cfg = CosyVoice2Config.from_yaml(gdir / "full_size" / "cosyvoice2_full.yaml")
    ref = json.loads((gdir / "full_size" / "cosyvoice2_full_config.json").read_text())
    flow = to_resolved(cfg.flow)
    assert flow["kwargs"] == ref["flow"]["kwargs"]
    assert flow["decoder"]["kwargs"] == ref["flow"]["decoder"]["kwargs"]  # cfm_params incl. sigma_min 1e-06
    assert flow["decoder"]["estimator"] == ref["flow"]["decoder"]["estimator"]
    assert flow["encoder"]["kwargs"] == ref["flow"]["encoder"]["kwargs"]
    assert to_resolved(cfg.hift) == ref["hift"]
