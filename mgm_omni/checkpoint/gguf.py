"""GGUF (llama.cpp) checkpoints of Qwen2 / Llama / Qwen3 LLMs as Hugging Face tensors, config and tokenizer.

``read_gguf`` reads a file with the ``gguf`` package, dequantises every tensor (F32, F16, Q8_0, Q4_K, Q6_K, ...)
to float32 with ``gguf.quants.dequantize``, renames llama.cpp names to the Hugging Face ones our decoder keeps
(``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``) and, for ``llama`` files, undoes the
row permutation llama.cpp applies to q/k so that its interleaved RoPE equals the Hugging Face half-split one.
``convert_gguf`` writes the result as a Hugging Face directory (``config.json``, ``model.safetensors``,
``tokenizer.json``) that :func:`mgm_omni.models.qwen.CausalLM.from_pretrained` loads like an official one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.checkpoint import CheckpointError, save_state_dict

ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_LAYER = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# GGUF token types (llama.cpp): 1 normal, 3 control, 4 user-defined, 5 unused (padding rows).
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


@dataclass
class GGUFModel:
    """A GGUF file read into Hugging Face form.

    Attributes:
        config: a Hugging Face ``config.json`` dict (``model_type`` qwen2 / llama / qwen3).
        state: float32 tensors under Hugging Face names.
        tokenizer: ``tokenizer.json`` content (a ``tokenizers`` JSON string) and its special tokens.
        name: ``general.name`` of the file.
    """

    config: dict
    state: dict[str, torch.Tensor]
    tokenizer_json: str
    special_tokens: dict[str, str]
    name: str


def hf_name(gguf_name: str) -> str:
    """The Hugging Face name of a llama.cpp tensor name; :class:`CheckpointError` for an unknown one."""
    base, _, kind = gguf_name.rpartition(".")
    if base in TOP_NAMES and kind == "weight":
        return f"{TOP_NAMES[base]}.weight"
    m = _LAYER.fullmatch(gguf_name)
    if m and m.group(2) in LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    raise CheckpointError(f"GGUF tensor {gguf_name!r} has no counterpart in a Qwen2/Llama/Qwen3 decoder")


def permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order for interleaved RoPE: within each head, row ``h·D/2 + i`` moves to ``2i + h``."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`permute_qk`: back to the Hugging Face half-split RoPE layout."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _open(path: str | os.PathLike):
    try:
        import gguf
    except ImportError as exc:
        raise CheckpointError("reading GGUF files needs the gguf package: pip install 'mgm-omni[brain]'") from exc
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: GGUF file not found")
    try:
        return gguf, gguf.GGUFReader(str(path))
    except Exception as exc:  # a truncated or foreign file fails in many ways inside the reader
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from exc


def gguf_config(reader, arch: str, vocab_rows: int, tied: bool, has_bias: bool) -> dict:
    """The Hugging Face ``config.json`` of a GGUF file's metadata (``{arch}.*`` keys)."""
    def key(name, default=None):
        return _field(reader, f"{arch}.{name}", default)

    if key("rope.scaling.type", "none") not in ("none", None):
        raise CheckpointError(f"GGUF RoPE scaling {key('rope.scaling.type')!r} is not supported")
    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    cfg = {
        "architectures": [ARCHITECTURES[arch]], "model_type": arch, "vocab_size": int(key("vocab_size", vocab_rows)),
        "hidden_size": hidden, "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")), "num_attention_heads": heads,
        "num_key_value_heads": int(key("attention.head_count_kv", heads)),
        "rope_theta": float(key("rope.freq_base", 10000.0)),
        # stored as float32: 1e-6 reads back as 9.99999997e-07
        "rms_norm_eps": float(f"{float(key('attention.layer_norm_rms_epsilon')):.6g}"),
        "max_position_embeddings": int(key("context_length")), "tie_word_embeddings": tied,
        "hidden_act": "silu", "torch_dtype": "float32",
    }
    head_dim = key("attention.key_length")
    if head_dim is not None and int(head_dim) != hidden // heads:
        cfg["head_dim"] = int(head_dim)
    if arch == "llama":
        cfg["attention_bias"] = has_bias
    for name, field in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        value = _field(reader, f"tokenizer.ggml.{field}")
        if value is not None:
            cfg[name] = int(value)
    return cfg


def read_gguf(path: str | os.PathLike, progress: bool = False) -> GGUFModel:
    """Read and dequantise a GGUF LLM; see the module docstring.

    Raises:
        CheckpointError: a missing or unreadable file, an architecture other than qwen2 / llama / qwen3, an
            unknown tensor name, a quantisation the ``gguf`` package cannot dequantise.
    """
    gguf, reader = _open(path)
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not one of {sorted(ARCHITECTURES)}")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv", heads))
    tensors = reader.tensors
    if progress:
        from tqdm import tqdm

        tensors = tqdm(tensors, desc=f"dequantising {Path(path).name}", unit="tensor")
    state: dict[str, torch.Tensor] = {}
    for t in tensors:
        name = hf_name(t.name)
        try:
            values = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise CheckpointError(f"{path}: {t.name}: {exc}") from None
        shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dims innermost first
        w = torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))  # a copy: the file is mapped
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = unpermute_qk(w, heads if "q_proj" in name else kv_heads)
        elif arch == "llama" and name.endswith(("q_proj.bias", "k_proj.bias")):
            raise CheckpointError(f"{path}: q/k biases in a llama GGUF are not supported")
        state[name] = w
    if "model.embed_tokens.weight" not in state:
        raise CheckpointError(f"{path}: no token_embd.weight tensor")
    tied = "lm_head.weight" not in state
    has_bias = any(k.endswith("q_proj.bias") for k in state)
    config = gguf_config(reader, arch, state["model.embed_tokens.weight"].shape[0], tied, has_bias)
    tok_json, special = gguf_tokenizer(reader, path)
    return GGUFModel(config, state, tok_json, special, str(_field(reader, "general.name", "")))


def gguf_tokenizer(reader, path) -> tuple[str, dict[str, str]]:
    """``tokenizer.json`` content and the eos/pad/bos token strings from ``tokenizer.ggml.*`` metadata.

    Byte-level BPE (``tokenizer.ggml.model`` "gpt2") with the pre-tokenizer named by ``tokenizer.ggml.pre``:
    ``qwen2`` (the Qwen split, NFC) or ``smollm`` / ``gpt2`` (GPT-2's split; smollm splits digits singly).
    Control and user-defined tokens become added tokens (control ones special); unused padding rows are left out.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    from mgm_omni.text.tokenizer import build_qwen_bpe

    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise CheckpointError(f"{path}: tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' only)")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, (tok, ty) in enumerate(zip(tokens, types)) if ty in (NORMAL, CONTROL, USER_DEFINED)}
    pre = _field(reader, "tokenizer.ggml.pre", "gpt2")
    if pre == "qwen2":
        backend = build_qwen_bpe(vocab, merges)
    elif pre in ("smollm", "gpt2", "default"):
        backend = Tokenizer(models.BPE(vocab, merges, unk_token=None, fuse_unk=False, byte_fallback=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                                 if pre == "smollm" else byte_level)
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        backend.decoder = decoders.ByteLevel()
    else:
        raise CheckpointError(f"{path}: tokenizer pre-tokenizer {pre!r} is not supported (qwen2, smollm, gpt2)")
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False)
                                for tok, ty in zip(tokens, types) if ty == CONTROL])
    backend.add_tokens([AddedToken(tok, normalized=True) for tok, ty in zip(tokens, types) if ty == USER_DEFINED])
    for tok, ty in zip(tokens, types):
        if ty in (CONTROL, USER_DEFINED) and backend.token_to_id(tok) != vocab[tok]:
            raise CheckpointError(f"{path}: added token {tok!r} did not keep its id {vocab[tok]}")
    special = {}
    for role in ("eos", "bos", "padding"):
        idx = _field(reader, f"tokenizer.ggml.{role}_token_id")
        if idx is not None:
            special["pad_token" if role == "padding" else f"{role}_token"] = tokens[int(idx)]
    return backend.to_str(), special


def convert_gguf(path: str | os.PathLike, out_dir: str | os.PathLike, dtype: torch.dtype = torch.bfloat16,
                 progress: bool = False) -> Path:
    """Write a GGUF LLM as a Hugging Face directory; returns ``out_dir``.

    ``config.json`` (the decoder config with ``torch_dtype``), ``generation_config.json`` (bos/eos ids),
    ``model.safetensors`` in ``dtype``, ``tokenizer.json`` and ``tokenizer_config.json`` (eos/pad/bos strings).
    """
    model = read_gguf(path, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(model.config, torch_dtype=str(dtype).removeprefix("torch."))
    config["gguf_name"] = model.name
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    save_state_dict({k: v.to(dtype) for k, v in model.state.items()}, out)
    (out / "tokenizer.json").write_text(model.tokenizer_json, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(model.special_tokens, ensure_ascii=False) + "\n")
    return out
