"""The MLLM (MGMOmni): logits against transformers' Qwen2.5-VL text model with the same 3-D positions,
cached == uncached decoding, placeholder splicing (order, counts, errors), the official checkpoint layout,
streamed text and the text decode loop."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.checkpoint import CheckpointError, load_state_dict, save_state_dict
from mgm_omni.config import OmniConfig
from mgm_omni.generation.mllm.runner import MLLM, MLLMPrompt, MLLMRunner, TextDecodeConfig, TextDetokenizer, text_stream
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.models.omni_lm import MediaFeatures, MGMOmni, OmniInputError
from mgm_omni.hub.tiny_brain import random_audio_tower, random_mgm_omni, tiny_omni_config, write_omni_dir
from mgm_omni.text import (
    IMAGE_TOKEN_INDEX,
    SPEECH_TOKEN_INDEX,
    Tokenizer,
    mllm_prompt,
    mllm_user_content,
    tokenize_with_placeholders,
)

GREEDY = TextDecodeConfig(SamplingConfig(temperature=0.0), max_new_tokens=12)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    """A tiny MGMOmni with a 300-id vocabulary and untied head (parity and splicing tests)."""
    cfg = OmniConfig.from_dict(tiny_omni_config(vocab_size=300, tie=False, audio_width=16))
    return random_mgm_omni(cfg, seed=3)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from mgm_omni.hub.tiny_mouth import BuiltinModelError
    from mgm_omni.hub.tiny_brain import _write_tokenizer

    root = tmp_path_factory.mktemp("tok")
    try:
        _write_tokenizer(root)
    except BuiltinModelError as exc:
        pytest.skip(str(exc))
    return Tokenizer.from_dir(root)


@pytest.fixture(scope="module")
def mllm(tokenizer):
    """A full-vocabulary tiny MLLM with a tiny dual tower on 1 s windows (5 audio tokens per window)."""
    cfg = OmniConfig.from_dict(tiny_omni_config(audio_width=16))
    model = random_mgm_omni(cfg, seed=5)
    model.attach_towers(speech_tower=random_audio_tower(cfg, window_positions=50, seed=6))
    return MLLM(model, tokenizer, GREEDY, stop_ids=[tokenizer.eos_token_id])


def reference_positions(segments) -> tuple[torch.Tensor, int]:
    """From the spec (§4.6), independently: text/audio (p, p, p); a visual (t, h, w) grid at
    (t_idx, h_idx, w_idx) + p, then p = max + 1. ``segments``: list of int (a text/audio run) or grid."""
    cols, p = [], 0
    for seg in segments:
        if isinstance(seg, int):
            cols.append(torch.arange(p, p + seg).expand(3, -1))
            p += seg
        else:
            t, h, w = seg
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
            block = grid.reshape(3, -1) + p
            cols.append(block)
            p = int(block.max()) + 1
    pos = torch.cat(cols, dim=1)
    return pos[:, None], p - pos.shape[1]


def hf_text_model(model: MGMOmni):
    """transformers' Qwen2.5-VL text model + head with our weights (test-only oracle), fp32, eager."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    c = model.cfg
    hf_cfg = transformers.Qwen2_5_VLTextConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, rope_scaling=dict(c.rope_scaling), rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf_cfg._attn_implementation = "eager"
    text = m.Qwen2_5_VLTextModel(hf_cfg).eval()
    ours = {k[len("model."):]: v for k, v in model.state_dict().items()
            if k.startswith("model.") and not k.startswith("model.mm_speech_projector.")}
    text.load_state_dict(ours, strict=True)
    head = torch.nn.Linear(c.hidden_size, c.vocab_size, bias=False)
    head.weight.data.copy_(model.lm_head.weight)
    return text, head


def test_text_logits_match_transformers(small):
    text, head = hf_text_model(small)
    ids = torch.randint(0, 300, (1, 23), generator=torch.Generator().manual_seed(0))
    pos, _ = reference_positions([23])
    with torch.no_grad():
        ref = head(text(input_ids=ids, position_ids=pos).last_hidden_state)
        out = small(small.model.embed_tokens(ids), pos)
        plain = small(small.model.embed_tokens(ids))  # default positions: 0..T-1 on all axes
    assert (out - ref).abs().max().item() < 1e-4
    assert (plain - ref).abs().max().item() < 1e-4


def test_spliced_mixed_sequence_matches_transformers(small):
    """Audio and an image block spliced at their placeholders, 3-D positions with a non-zero rope delta."""
    text, head = hf_text_model(small)
    g = torch.Generator().manual_seed(1)
    audio = MediaFeatures("audio", torch.randn(4, 64, generator=g))
    image = MediaFeatures("visual", torch.randn(6, 64, generator=g), grid_thw=(1, 4, 6))
    ids = [5, 6, 7, 8, 9, IMAGE_TOKEN_INDEX, 10, SPEECH_TOKEN_INDEX, 11, 12]
    embeds, spans = small.splice(ids, [audio, image])
    assert [(s.kind, s.start, s.stop) for s in spans] == [("visual", 5, 11), ("audio", 12, 16)]
    pos, delta = reference_positions([5, (1, 2, 3), 5, 2])
    assert delta == -3  # the 6 image tokens span 3 positions
    with torch.no_grad():
        ref = head(text(inputs_embeds=embeds, position_ids=pos).last_hidden_state)
        out = small(embeds, pos)
    err = (out - ref).abs().max().item()
    assert err < 1e-4, err


def test_cached_decoding_equals_uncached(small):
    g = torch.Generator().manual_seed(2)
    image = MediaFeatures("visual", torch.randn(12, 64, generator=g), grid_thw=(2, 4, 6))
    ids = [3, 4, IMAGE_TOKEN_INDEX, 5, 6, 7]
    embeds, _ = small.splice(ids, [image])
    pos, delta = reference_positions([2, (2, 2, 3), 3])
    prompt = MLLMPrompt(embeds, pos, delta)
    new = [17, 250, 3, 99, 42]
    runner = MLLMRunner(small, initial_tokens=2)  # small on purpose: the cache must grow
    steps = [runner.start(prompt)]
    steps += [runner.step(t) for t in new]
    full_embeds = torch.cat([embeds, small.model.embed_tokens(torch.tensor([new]))], dim=1)
    n = prompt.length
    tail = (torch.arange(n, n + len(new)) + delta).expand(3, 1, -1)
    with torch.no_grad():
        full = small(full_embeds, torch.cat([pos, tail], dim=2))[0]
    want = full[n - 1:]
    got = torch.stack(steps)
    assert (got - want).abs().max().item() < 1e-5


def test_splice_order_and_counts(small):
    g = torch.Generator().manual_seed(4)
    a1 = MediaFeatures("audio", torch.randn(3, 64, generator=g))
    a2 = MediaFeatures("audio", torch.randn(5, 64, generator=g))
    v1 = MediaFeatures("visual", torch.randn(4, 64, generator=g), grid_thw=(1, 4, 4))
    ids = [1, SPEECH_TOKEN_INDEX, 2, IMAGE_TOKEN_INDEX, SPEECH_TOKEN_INDEX, 3]
    embeds, spans = small.splice(ids, [a1, v1, a2])  # kinds are queued separately, each in prompt order
    assert embeds.shape == (1, 3 + 3 + 4 + 5, 64)
    assert [(s.kind, s.start, s.length) for s in spans] == [("audio", 1, 3), ("visual", 5, 4), ("audio", 9, 5)]
    e = embeds[0]
    assert torch.equal(e[1:4], a1.embeddings) and torch.equal(e[5:9], v1.embeddings)
    assert torch.equal(e[9:14], a2.embeddings)
    table = small.model.embed_tokens.weight
    assert torch.equal(e[[0, 4, 14]], table[[1, 2, 3]])


@pytest.mark.parametrize("ids, media, match", [
    ([1, SPEECH_TOKEN_INDEX, 2], [], r"1 <speech> placeholder\(s\) but 0 audio input"),
    ([1, 2], ["audio"], r"0 <speech> placeholder\(s\) but 1 audio input"),
    ([1, IMAGE_TOKEN_INDEX], [], r"1 <image> placeholder\(s\) but 0 visual input"),
    ([1, -7], [], "neither a placeholder"),
    ([1, 300], [], r"vocabulary \[0, 300\)"),
])
def test_splice_errors(small, ids, media, match):
    feats = [MediaFeatures("audio", torch.zeros(2, 64)) for _ in media]
    with pytest.raises(OmniInputError, match=match):
        small.splice(ids, feats)


def test_media_feature_errors(small):
    with pytest.raises(OmniInputError, match="width 32"):
        small.splice([SPEECH_TOKEN_INDEX], [MediaFeatures("audio", torch.zeros(2, 32))])
    with pytest.raises(OmniInputError, match="grid"):
        MediaFeatures("visual", torch.zeros(6, 64), grid_thw=(1, 4, 4))
    with pytest.raises(OmniInputError, match="patch grid"):
        MediaFeatures("visual", torch.zeros(6, 64))
    with pytest.raises(OmniInputError, match="n > 0"):
        MediaFeatures("audio", torch.zeros(0, 64))


def test_audio_windows_expand_the_placeholder(mllm):
    """2.5 s of audio on 1 s windows -> 3 windows x 5 tokens replace the one <speech>."""
    wave = 0.1 * torch.randn(40000, generator=torch.Generator().manual_seed(0))
    audio = mllm.encode_audio(wave)
    assert audio.embeddings.shape == (15, 64)
    prompt = mllm.prompt([("user", mllm_user_content("What is said?", speech=True))], [audio])
    (span,) = prompt.spans
    assert span.kind == "audio" and span.length == 15
    ids = mllm.prompt_ids([("user", mllm_user_content("What is said?", speech=True))])
    assert prompt.length == len(ids) - 1 + 15
    assert torch.equal(prompt.embeds[0, span.start:span.stop], audio.embeddings)
    assert torch.equal(prompt.positions, torch.arange(prompt.length).expand(3, 1, -1)) and prompt.rope_delta == 0
    with pytest.raises(OmniInputError, match="<speech> placeholder"):  # audio question with no audio
        mllm.prompt([("user", mllm_user_content("Hi", speech=True))])


def hf_rope_index(ids: list[int], types: list[int], image_grids, video_grids):
    """transformers' Qwen2.5-VL ``get_rope_index`` (oracle), video time spacing set to plain frame-group indices."""
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    holder = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=2,
                                                                                  tokens_per_second=1)))
    holder.get_vision_position_ids = lambda *a, **k: m.Qwen2_5_VLModel.get_vision_position_ids(holder, *a, **k)
    pos, delta = m.Qwen2_5_VLModel.get_rope_index(
        holder, torch.tensor([ids]), torch.tensor([types]),
        image_grid_thw=torch.tensor(image_grids) if image_grids else None,
        video_grid_thw=torch.tensor(video_grids) if video_grids else None,
        second_per_grid_ts=torch.ones(len(video_grids)) if video_grids else None)
    return pos, int(delta)


def test_mixed_prompt_positions_equal_references(mllm):
    """Image, audio and video in one prompt: our positions = the spec rule = transformers' get_rope_index."""
    g = torch.Generator().manual_seed(9)
    image = MediaFeatures("visual", torch.randn(6, 64, generator=g), grid_thw=(1, 4, 6))
    video = MediaFeatures("visual", torch.randn(12, 64, generator=g), grid_thw=(2, 4, 6))
    audio = MediaFeatures("audio", torch.randn(5, 64, generator=g))
    content = "<|vision_start|><image><|vision_end|>\nThen <speech> and <|vision_start|><image><|vision_end|>?"
    prompt = mllm.prompt([("user", content)], [image, audio, video])
    (si, sa, sv) = prompt.spans
    assert (si.kind, sa.kind, sv.kind) == ("visual", "audio", "visual")
    runs = [si.start, (1, 2, 3), sa.start - si.stop, 5, sv.start - sa.stop, (2, 2, 3), prompt.length - sv.stop]
    ref, delta = reference_positions(runs)
    assert torch.equal(prompt.positions, ref) and prompt.rope_delta == delta
    types = [0] * prompt.length
    types[si.start:si.stop] = [1] * si.length
    types[sv.start:sv.stop] = [2] * sv.length
    hf_pos, hf_delta = hf_rope_index([0] * prompt.length, types, [[1, 4, 6]], [[2, 4, 6]])
    assert torch.equal(prompt.positions, hf_pos) and prompt.rope_delta == hf_delta


def test_prompt_ids_only_user_turns_hold_placeholders(mllm):
    history = [("user", mllm_user_content("Describe it.", image=True, speech=True)), ("assistant", "It is a cat."),
               ("user", "Sure?")]
    full = tokenize_with_placeholders(mllm_prompt(history), mllm.tokenizer)
    assert mllm.prompt_ids(history) == full  # turn by turn = the whole string
    tricky = [("user", "Hi"), ("assistant", "Write <speech> or <image> tags."), ("user", "Why?")]
    ids = mllm.prompt_ids(tricky)
    assert min(ids) >= 0 and mllm.tokenizer.decode(ids) == mllm_prompt(tricky)
    mllm.prompt(tricky)  # no media needed: the reply's literal tags are text


def test_no_audio_tower_is_a_clear_error(small):
    lone = MLLM(small, tokenizer=None, stop_ids=[0])
    with pytest.raises(OmniInputError, match="no audio tower"):
        lone.encode_audio(torch.zeros(16000))


def test_greedy_stream_equals_uncached_argmax_loop(mllm):
    prompt = mllm.prompt([("user", "Say something.")])
    steps = list(mllm.stream(prompt))
    assert len(steps) == GREEDY.max_new_tokens and steps[-1].finish_reason == "max_tokens"
    embeds, toks = prompt.embeds, []
    with torch.no_grad():
        for _ in range(GREEDY.max_new_tokens):
            logits = mllm.model(embeds)[0, -1]
            toks.append(int(logits.argmax()))
            embeds = torch.cat([embeds, mllm.model.model.embed_tokens(torch.tensor([[toks[-1]]]))], dim=1)
    assert [s.token for s in steps] == toks
    assert "".join(s.text for s in steps) == mllm.tokenizer.decode(toks)


def test_stop_id_and_vocabulary_mask(mllm):
    prompt = mllm.prompt([("user", "Say something.")])
    first = next(iter(mllm.stream(prompt))).token
    stopped = list(text_stream(MLLMRunner(mllm.model), prompt, mllm.tokenizer, GREEDY, stop_ids=[first]))
    assert len(stopped) == 1 and stopped[0].finish_reason == "eos" and stopped[0].text == ""
    masked = TextDecodeConfig(SamplingConfig(temperature=1.0, top_k=0), max_new_tokens=40, mask_from=1000, seed=0)
    ids = [s.token for s in mllm.stream(prompt, masked)]
    assert len(ids) == 40 and max(ids) < 1000


def test_detokenizer_pieces_join_to_the_decoded_text(tokenizer):
    text = "Hi 你好，世界！ 😀 naïve\n**bold**"
    ids = tokenizer.encode(text)
    detok = TextDetokenizer(tokenizer)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)  # never a half character
    assert "" in pieces  # the emoji spans several ids: some pushes release nothing


def test_official_layout_loads_and_ignores_tower_copies(tmp_path):
    cfg_dict = tiny_omni_config(vocab_size=1000, tie=False, audio_width=16)
    root = write_omni_dir(tmp_path / "m", cfg_dict, seed=7, window_positions=50)
    state = load_state_dict(root)
    assert any(k.startswith("model.speech_tower.speech_tower_aux.") for k in state)
    assert any(k.startswith("model.mm_projector.") for k in state)
    assert "model.layers.0.self_attn.q_proj.bias" in state and "model.mm_speech_projector.linear1.weight" in state
    model = MGMOmni.from_pretrained(root)
    assert model.model.speech_tower is not None
    assert model.model.vision_tower is not None and any(k.startswith("model.vision_tower.") for k in state)
    folders = {  # where each tower's weights live, and the prefix they are stored under there
        "model.speech_tower.speech_tower.": load_state_dict(root / "audio-encoder"),
        "model.speech_tower.speech_tower_aux.": load_state_dict(root / "whisper-aux", strip_prefix="model.encoder."),
        "model.vision_tower.vision_tower.": load_state_dict(root / "qwen2.5-vl-vision", strip_prefix="visual."),
    }
    for k, v in model.state_dict().items():
        prefix = next((p for p in folders if k.startswith(p)), None)
        if prefix is None:
            assert torch.equal(v, state[k].float()), k  # LLM and speech projector: from the checkpoint
            continue
        # Towers come from their own (fp32) folders, not from the bf16 copies in the checkpoint.
        assert torch.equal(v, folders[prefix][k[len(prefix):]]), k
        if v.dim() >= 2:
            assert not torch.equal(v, state[k].float()), k  # the bf16 copy differs: it was not used
    # A missing LLM tensor or an unknown key is a clear error.
    bad = dict(state)
    del bad["model.layers.1.self_attn.k_proj.bias"]
    bad["model.extra.weight"] = torch.zeros(1)
    save_state_dict(bad, root)
    with pytest.raises(CheckpointError, match=r"1 missing .*k_proj.bias.*1 unexpected .*model.extra.weight"):
        MGMOmni.from_pretrained(root)
