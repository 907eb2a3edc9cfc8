"""The Qwen3 text tokenizer of the built-in tiny models, shipped inside the package.

A plain ``pip install mgm-omni`` must be able to run the default model, so its tokenizer cannot come from
another package. Qwen3's byte-level BPE is stored compactly in ``assets/qwen3-tokenizer.bpe.xz`` (0.6 MB
instead of the 11 MB ``tokenizer.json``): byte-level BPE implies its vocabulary (ids 0-255 are the byte
alphabet, id 256 + r is the token made by merge r), so only the merges are kept, one per line, after a
JSON header holding everything else of ``tokenizer.json``. :func:`unpack` rebuilds the exact
``tokenizer.json`` data; :func:`tokenizer_json` writes it once into the cache. The files are the Qwen team's
(Apache-2.0); see ``assets/NOTICE``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

ASSET = Path(__file__).parent / "assets" / "qwen3-tokenizer.bpe.xz"
FORMAT = "mgm-omni-bpe/1"
N_BYTES = 256


class BPEPackError(ValueError):
    """A tokenizer that this compact form cannot hold, or a damaged packed file."""


def pack(tokenizer: dict) -> bytes:
    """``tokenizer.json`` data of a byte-level BPE -> the xz-compressed compact form."""
    import lzma

    model = tokenizer.get("model") or {}
    vocab, merges = model.get("vocab"), model.get("merges")
    if model.get("type") != "BPE" or not isinstance(vocab, dict) or not isinstance(merges, list):
        raise BPEPackError("not a BPE tokenizer.json (model.type BPE with vocab and merges)")
    pairs = [m if isinstance(m, list) else m.split(" ") for m in merges]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    base = [token for token, _ in by_id[:N_BYTES]]
    if [i for _, i in by_id] != list(range(len(by_id))) or len(vocab) != N_BYTES + len(pairs):
        raise BPEPackError("the vocabulary is not the byte alphabet followed by one token per merge")
    for r, pair in enumerate(pairs):
        if len(pair) != 2 or any(not p or " " in p or "\n" in p for p in pair):
            raise BPEPackError(f"merge {r} {pair!r} cannot be stored as one 'a b' line")
        if vocab.get(pair[0] + pair[1]) != N_BYTES + r:
            raise BPEPackError(f"merge {r} {pair!r} does not make token {N_BYTES + r}")
    rest = {**tokenizer, "model": {**model, "vocab": None, "merges": None}}
    header = {"format": FORMAT, "tokenizer": rest, "base": base, "merges_as_lists": isinstance(merges[0], list)}
    text = json.dumps(header, ensure_ascii=False) + "\n" + "\n".join(f"{a} {b}" for a, b in pairs) + "\n"
    return lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)


def unpack(data: bytes) -> dict:
    """The compact form -> ``tokenizer.json`` data (vocabulary and merges rebuilt)."""
    import lzma

    try:
        head, _, body = lzma.decompress(data).decode("utf-8").partition("\n")
        header = json.loads(head)
    except (lzma.LZMAError, UnicodeDecodeError, ValueError) as exc:
        raise BPEPackError(f"damaged packed tokenizer: {exc}") from None
    if header.get("format") != FORMAT:
        raise BPEPackError(f"unknown packed tokenizer format {header.get('format')!r}")
    pairs = [line.split(" ") for line in body.splitlines()]
    vocab = {token: i for i, token in enumerate(header["base"])}
    for r, (a, b) in enumerate(pairs):
        vocab[a + b] = N_BYTES + r
    tokenizer = header["tokenizer"]
    tokenizer["model"]["vocab"] = vocab
    tokenizer["model"]["merges"] = pairs if header["merges_as_lists"] else [f"{a} {b}" for a, b in pairs]
    return tokenizer


def tokenizer_json(cache: Path) -> Path:
    """``tokenizer.json`` of the shipped Qwen3 tokenizer, written under ``cache`` on first use."""
    path = Path(cache) / "qwen3-tokenizer" / "tokenizer.json"
    if path.is_file():
        return path
    if not ASSET.is_file():
        raise BPEPackError(f"{ASSET} is missing: the mgm-omni installation is incomplete; reinstall it")
    data = json.dumps(unpack(ASSET.read_bytes()), ensure_ascii=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)  # atomic: concurrent first uses never read half a file
    return path
