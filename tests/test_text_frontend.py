"""The mouth's text front-end: the Qwen BPE path gives exactly the tokenizer's prompt, a g2p step touches user
text only (never the chat markup), and a mouth directory declaring its own phoneme tokenizer gets it."""

from __future__ import annotations

import json

import pytest

from mgm_omni.config import SpeechLMConfig
from mgm_omni.config.mouth import MOUTH_FILE, MouthSpec
from mgm_omni.generation.speech.prompt import tts_prompt_rows
from mgm_omni.text import BPEFrontEnd, Tokenizer, TokenizerError, load_text_frontend

REF = list(range(100, 140))  # 40 reference speech tokens


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    from mgm_omni.hub import resolve_mouth

    root = resolve_mouth("tiny-random").path
    return root, Tokenizer.from_dir(root), SpeechLMConfig.from_json_file(root / "config.json")


def test_qwen_front_end_is_the_tokenizer(tiny):
    root, tok, cfg = tiny
    fe = load_text_frontend(root)
    plain = tts_prompt_rows(tok, cfg, "Hello world. **Bold**", "A reference.", REF)
    ours = tts_prompt_rows(fe, cfg, "Hello world. **Bold**", "A reference.", REF)
    assert ours.rows.tolist() == plain.rows.tolist() and ours.buffer == plain.buffer == tok.encode("Hello world. **Bold**")
    dot, stars = tok.encode(".")[0], tok.encode("**")[0]
    assert fe.is_sentence_end(dot) and not fe.is_sentence_end(stars) and fe.is_skippable(stars)
    assert (fe.pad_token_id, fe.eos_token_id) == (tok.pad_token_id, tok.eos_token_id) and len(fe) == len(tok)


def test_g2p_reads_user_text_and_leaves_the_markup_alone(tiny):
    root, tok, cfg = tiny
    fe = BPEFrontEnd(tok, g2p=str.upper)
    prompt = tts_prompt_rows(fe, cfg, "hello world.", "a reference.", REF)
    plain = tts_prompt_rows(tok, cfg, "hello world.", "a reference.", REF)
    assert prompt.buffer == tok.encode("HELLO WORLD.")
    head = plain.block[0]  # the chat markup before the speech block: untouched by the g2p
    assert prompt.rows[:head].tolist() == plain.rows[:head].tolist()
    block = prompt.rows[prompt.block[0]:prompt.block[1], 0].tolist()
    assert block[: len(tok.encode("A REFERENCE."))] == tok.encode("A REFERENCE.")  # the transcript went through it
    assert fe.encode("hi") == tok.encode("HI") and fe.tokenize("<|im_end|>hi") == tok.encode("<|im_end|>hi")


def test_unknown_front_ends_are_named(tiny, tmp_path):
    root, _, _ = tiny
    with pytest.raises(TokenizerError, match="unknown text front-end"):
        load_text_frontend(root, "sentencepiece")
    with pytest.raises(TokenizerError, match="g2p step 'espeak-xx'.*not available"):
        load_text_frontend(root, "own-bpe", g2p="espeak-xx")


def test_a_mouth_with_its_own_phoneme_tokenizer_reads_phonemes(tmp_path):
    """What the own small mouth will declare: text_frontend own-bpe, the phoneme BPE in its folder; its
    prompt rows and chunk rules come from that front-end, and len(tokenizer) = text size (no speech entries)."""
    pytest.importorskip("pypinyin")
    from mgm_omni.text.phoneme_tokenizer import PhonemeG2P, PhonemeTokenizer, base_vocab_size

    try:
        g2p = PhonemeG2P()
        prepared = [g2p(t) for t in ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue.")]
    except Exception as exc:  # espeak-ng data not installed here
        pytest.skip(f"G2P unavailable: {exc}")
    tok = PhonemeTokenizer.train(prepared * 3, base_vocab_size() + 30)
    root = tmp_path / "mouth"
    tok.save(root / "text")
    size = len(tok)
    cfg = SpeechLMConfig(vocab_size=size + 4 * 6563, tokenizer_text_size=size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         tts_adapter_config="(1,64,4_2,128)")
    cfg.save(root / "config.json")
    (root / MOUTH_FILE).write_text(json.dumps({"text_frontend": "own-bpe", "tokenizer_dir": "text",
                                               "g2p": "phonemes"}))
    spec = MouthSpec.from_dir(root)
    fe = load_text_frontend(root, spec.text_frontend, spec.tokenizer_dir, spec.g2p)
    assert isinstance(fe, PhonemeTokenizer)
    rows = tts_prompt_rows(fe, cfg, "The canoe slid.", "Glue the sheet.", REF)
    assert rows.buffer == fe.encode("The canoe slid.") and max(rows.buffer) < size - 3
    assert fe.is_sentence_end(rows.buffer[-1])  # the '.' survives the G2P as a sentence end
