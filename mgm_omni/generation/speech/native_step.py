"""The SpeechLM decode step through the native library (``csrc/decode_step.c``): CPU fast path.

:class:`NativeStep` copies a SpeechLM's decoder weights once into the layout the C step wants (fused
q/k/v and gate/up matrices, float32 norms), in one of three weight formats:

- ``"bf16"``: bfloat16 weights, float32 activations (the default for a bfloat16 model);
- ``"fp32"``: float32 weights (the default for a float32 model; matches the PyTorch step to ~1e-6);
- ``"int8"``: int8 weights with a float32 scale per output row, activations quantised per vector
  (the speed mode: half the bytes of bf16).

and on one instruction set (``isa``): ``"auto"`` (the widest this CPU has), ``"avx512"``, ``"avx2"``,
``"generic"`` (plain C) or ``"amx"`` (bf16 weights on AMX tiles, Intel Sapphire Rapids and later).
:func:`supported_isas` lists those that run here; ``step_choice`` times them against each other.

It then runs a whole step (embedding mean, backbone, adapter, speech head) with no PyTorch op per
layer, writing into the runner's own :class:`~mgm_omni.generation.kv_cache.KVCache` storage, so the
PyTorch prefill and the native steps share one cache. The copy costs one more set of the linear
weights in memory (like ``cpu_linear.pack_linears``, which it replaces).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch

from mgm_omni.generation.kv_cache import KVCache
from mgm_omni.generation.speech.native_build import NativeUnavailable, load_library
from mgm_omni.models.qwen import Decoder
from mgm_omni.models.speech_lm import SpeechLM

WEIGHT_FORMATS = ("fp32", "bf16", "int8")
ISAS = ("auto", "generic", "avx2", "avx512", "amx")
_TYPE = {"fp32": 0, "bf16": 1, "int8": 2}
_ISA = {name: i for i, name in enumerate(ISAS)}
_c64, _ptr = ctypes.c_int64, ctypes.c_void_p


class _Mat(ctypes.Structure):
    _fields_ = [("type", _c64), ("n", _c64), ("k", _c64), ("w", _ptr), ("scale", _ptr), ("wsum", _ptr), ("bias", _ptr)]


class _Layer(ctypes.Structure):
    _fields_ = [("in_norm", _ptr), ("post_norm", _ptr), ("q_norm", _ptr), ("k_norm", _ptr), ("qkv", _Mat),
                ("o", _Mat), ("gate_up", _Mat), ("down", _Mat), ("k_cache", _ptr), ("v_cache", _ptr)]


class _Stack(ctypes.Structure):
    _fields_ = [("n_layers", _c64), ("hidden", _c64), ("n_heads", _c64), ("n_kv", _c64), ("head_dim", _c64),
                ("inter", _c64), ("capacity", _c64), ("kv_type", _c64), ("quantized", _c64),
                ("eps", ctypes.c_double), ("inv_freq", _ptr), ("final_norm", _ptr), ("layers", ctypes.POINTER(_Layer)),
                ("isa", _c64)]


def _signatures(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.mgm_work_floats.argtypes = [ctypes.POINTER(_Stack), _c64]
    lib.mgm_work_floats.restype = _c64
    lib.mgm_stack_step.argtypes = [ctypes.POINTER(_Stack), _c64, _ptr, _ptr, _ptr, _ptr, _c64]
    lib.mgm_stack_step.restype = ctypes.c_int
    lib.mgm_matvec.argtypes = [ctypes.POINTER(_Mat), _c64, _ptr, _ptr, _ptr, _ptr, _c64, _c64]
    lib.mgm_matvec.restype = None
    lib.mgm_isa_supported.argtypes = [_c64]
    lib.mgm_isa_supported.restype = ctypes.c_int
    return lib


def supported_isas() -> list[str]:
    """The instruction sets the native step can use on this CPU (``auto`` excluded)."""
    lib = _signatures(load_library())
    return [name for name in ISAS[1:] if lib.mgm_isa_supported(_ISA[name])]


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: (int8 weight, float32 scale (N,), int32 row sums (N,))."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous(), q.sum(dim=1, dtype=torch.int32).contiguous()


class _Weights:
    """Owns the converted tensors; ``mat`` builds the C view of one matrix."""

    def __init__(self, fmt: str) -> None:
        self.fmt, self.keep = fmt, []

    def vec(self, t: torch.Tensor | None) -> int | None:
        if t is None:
            return None
        t = t.detach().float().contiguous()
        self.keep.append(t)
        return t.data_ptr()

    def mat(self, weight: torch.Tensor, bias: torch.Tensor | None = None, fmt: str | None = None) -> _Mat:
        fmt = fmt or self.fmt
        n, k = weight.shape
        m = _Mat(type=_TYPE[fmt], n=n, k=k, bias=self.vec(bias))
        if fmt == "int8":
            q, scale, wsum = quantize_rows(weight)
            self.keep += [q, scale, wsum]
            m.w, m.scale, m.wsum = q.data_ptr(), scale.data_ptr(), wsum.data_ptr()
        else:
            w = weight.detach().to(torch.bfloat16 if fmt == "bf16" else torch.float32).contiguous()
            self.keep.append(w)
            m.w = w.data_ptr()
        return m


def _cat(*tensors: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(tensors, dim=0)


class _NativeStack:
    """One decoder stack in C layout, bound to a KV cache before each step."""

    def __init__(self, lib: ctypes.CDLL, stack: Decoder, weights: _Weights, final_norm: bool, isa: int) -> None:
        cfg = stack.cfg
        self.lib = lib
        self.layers = (_Layer * cfg.num_hidden_layers)()
        for i, layer in enumerate(stack.layers):
            att, mlp = layer.self_attn, layer.mlp
            c = self.layers[i]
            c.in_norm = weights.vec(layer.input_layernorm.weight)
            c.post_norm = weights.vec(layer.post_attention_layernorm.weight)
            c.q_norm = weights.vec(att.q_norm.weight if att.q_norm is not None else None)
            c.k_norm = weights.vec(att.k_norm.weight if att.k_norm is not None else None)
            c.qkv = weights.mat(_cat(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight),
                                _cat(att.q_proj.bias, att.k_proj.bias, att.v_proj.bias))
            c.o = weights.mat(att.o_proj.weight, att.o_proj.bias)
            c.gate_up = weights.mat(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0))
            c.down = weights.mat(mlp.down_proj.weight)
        self.c = _Stack(n_layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, n_heads=cfg.num_attention_heads,
                        n_kv=cfg.num_key_value_heads, head_dim=cfg.dim_per_head, inter=cfg.intermediate_size,
                        quantized=int(weights.fmt == "int8"), eps=cfg.rms_norm_eps,
                        inv_freq=weights.vec(stack.inv_freq),
                        final_norm=weights.vec(stack.norm.weight) if final_norm and stack.norm is not None else None,
                        layers=self.layers, isa=isa)
        self._bound: tuple | None = None
        self.work = torch.empty(0)

    def bind(self, cache: KVCache, batch: int) -> None:
        """Point the layers at ``cache``'s storage (again only after it was replaced or grew).

        The key holds every layer's storage address: a new cache can reuse some addresses of a freed one
        (the allocator hands the same blocks back), so checking a few layers would leave the others
        pointing at freed memory that another thread may be writing."""
        key = (tuple(t.data_ptr() for t in cache.k), tuple(t.data_ptr() for t in cache.v), cache.capacity, batch)
        if key == self._bound:
            return
        if cache.k[0].dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"native step: KV cache dtype {cache.k[0].dtype} is not float32/bfloat16")
        for i, layer in enumerate(self.layers):
            layer.k_cache, layer.v_cache = cache.k[i].data_ptr(), cache.v[i].data_ptr()
        self.c.capacity, self.c.kv_type = cache.capacity, int(cache.k[0].dtype == torch.bfloat16)
        self.work = torch.empty(int(self.lib.mgm_work_floats(ctypes.byref(self.c), batch)))
        self._bound = key

    def step(self, h: torch.Tensor, positions: torch.Tensor, rope_positions: torch.Tensor, cache: KVCache,
             threads: int) -> None:
        b = h.shape[0]
        if any(not t.is_contiguous() for t in (cache.k[0], cache.v[0])):
            raise ValueError("native step needs contiguous KV cache storage")
        self.bind(cache, b)
        rc = self.lib.mgm_stack_step(ctypes.byref(self.c), b, positions.data_ptr(), rope_positions.data_ptr(),
                                     h.data_ptr(), self.work.data_ptr(), threads)
        if rc != 0:
            raise IndexError(f"native step: a position in {positions.tolist()} is outside the cache")


class NativeStep:
    """A SpeechLM decode step in native code (CPU).

    Args:
        model: the SpeechLM (float32 or bfloat16, on the CPU). Its weights are copied; later changes to
            the model are not seen (build a new step).
        weights: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``None`` (the model's own dtype).
        threads: OpenMP threads; ``None`` = ``torch.get_num_threads()`` at each call.
        isa: instruction set (see the module docstring); one this CPU lacks raises ``NativeUnavailable``.

    Raises:
        NativeUnavailable: no compiler / build failed / disabled, the model is not on the CPU, or the
            instruction set is missing.
    """

    def __init__(self, model: SpeechLM, weights: str | None = None, threads: int | None = None,
                 isa: str = "auto") -> None:
        if model.lm_head.weight.device.type != "cpu":
            raise NativeUnavailable("the native step runs on the CPU only")
        if weights is None:
            weights = "bf16" if model.lm_head.weight.dtype == torch.bfloat16 else "fp32"
        if weights not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
        if isa not in ISAS:
            raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
        self.lib = _signatures(load_library())
        if not self.lib.mgm_isa_supported(_ISA[isa]):
            raise NativeUnavailable(f"this CPU cannot run the {isa} native step")
        self.model, self.weights, self.threads, self.isa = model, weights, threads, isa
        self._w = _Weights(weights)
        self.backbone = _NativeStack(self.lib, model.model, self._w, final_norm=True, isa=_ISA[isa])
        self.adapter = (_NativeStack(self.lib, model.tts_adapter, self._w, final_norm=False, isa=_ISA[isa])
                        if model.tts_adapter is not None else None)
        head_fmt = "fp32" if weights == "fp32" else "bf16"  # the head's logits are sampled from directly
        self.head = self._w.mat(model.speech_head_weight, fmt=head_fmt)
        self._head_scratch = torch.empty(0)
        self.table = model.model.embed_tokens.weight

    def set_isa(self, isa: str) -> None:
        """Run later steps on another instruction set (same weight copy; ``step_choice`` times them)."""
        if isa not in ISAS:
            raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
        if not self.lib.mgm_isa_supported(_ISA[isa]):
            raise NativeUnavailable(f"this CPU cannot run the {isa} native step")
        self.isa = isa
        for stack in (self.backbone, self.adapter):
            if stack is not None:
                stack.c.isa = _ISA[isa]

    @property
    def name(self) -> str:
        """E.g. ``native-bf16-avx512``."""
        return f"native-{self.weights}-{self.isa}"

    @torch.inference_mode()
    def __call__(self, rows: torch.Tensor, positions: Sequence[int], caches: tuple[KVCache, KVCache | None],
                 rope_positions: Sequence[int] | None = None) -> torch.Tensor:
        """(B, 1 + k) rows written at cache slots ``positions`` -> (B, k, S) float32 speech logits.

        ``rope_positions``: the rows' positions in the sequence when they differ from their slots (a
        windowed cache); default ``positions``."""
        model = self.model
        b = rows.shape[0]
        if rows.shape[-1] != model.num_slots + 1:
            raise ValueError(f"rows must have {model.num_slots + 1} columns, got shape {tuple(rows.shape)}")
        threads = self.threads or torch.get_num_threads()
        pos = torch.tensor(list(positions), dtype=torch.int64)
        rope = pos if rope_positions is None else torch.tensor(list(rope_positions), dtype=torch.int64)
        if rope.shape != pos.shape:
            raise ValueError("rope_positions must match positions")
        top = int(pos.max()) + 1
        h = self.table[rows + model.row_offsets].float().sum(dim=1).div_(model.num_slots + 1).contiguous()  # (B, H)
        for native, cache in ((self.backbone, caches[0]), (self.adapter, caches[1])):
            if native is None:
                continue
            cache.ensure_capacity(top)
            native.step(h, pos, rope, cache, threads)
            cache.lengths = torch.maximum(cache.lengths, pos + 1)
        logits = torch.empty(b, self.head.n)
        if self._head_scratch.numel() < b:
            self._head_scratch = torch.empty(b)
        self.lib.mgm_matvec(ctypes.byref(self.head), b, h.data_ptr(), logits.data_ptr(), None,
                            self._head_scratch.data_ptr(), threads, _ISA[self.isa])
        return logits.view(b, model.num_slots, model.cfg.tokenizer_speech_size)
