"""Tiny ONNX stand-ins with the I/O signatures of the official reference front ends, plus numpy twins.

- ``s3_tokenizer``: feats (1, 128, T) float32 + feats_length (1,) int32 -> codes (1, ceil(len / 4)) int64.
  Every 4th frame is scored against two random 81-way codebooks, code = 81 * argmax_a + argmax_b (0..6560), so the
  codes depend on the features and the output length on ``feats_length``, like the real strided-conv model.
- ``campplus``: fbank (1, T, 80) float32 -> (1, 192): the max over time of each bin times a random matrix. The max is
  not shift-invariant, so a missing mean subtraction changes the output.

The graphs are built with the ``onnx`` helper API and saved to a file, so the wrappers are tested through real
onnxruntime sessions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def s3_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((128, 81)).astype(np.float32), rng.standard_normal((128, 81)).astype(np.float32)


def s3_tokenizer(path: Path, seed: int = 0, stride: int = 4, offset: int = 0, out_type=TensorProto.INT64) -> Path:
    """Write the fake tokenizer; ``stride`` (frames per code), ``offset`` (added to codes) and ``out_type`` let
    tests build models that break the contract."""
    wa, wb = s3_weights(seed)
    inits = [
        numpy_helper.from_array(wa, "wa"),
        numpy_helper.from_array(wb, "wb"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([stride], np.int64), "step"),
        numpy_helper.from_array(np.array([stride - 1], np.int64), "round_up"),
        numpy_helper.from_array(np.array(81, np.int64), "k81"),
        numpy_helper.from_array(np.array(offset, np.int64), "offset"),
    ]
    nodes = [
        helper.make_node("Transpose", ["feats"], ["ft"], perm=[0, 2, 1]),  # (1, T, 128)
        helper.make_node("Slice", ["ft", "zero", "end", "ax1", "step"], ["picked"]),  # (1, ceil(T/stride), 128)
        helper.make_node("MatMul", ["picked", "wa"], ["sa"]),
        helper.make_node("MatMul", ["picked", "wb"], ["sb"]),
        helper.make_node("ArgMax", ["sa"], ["ia"], axis=-1, keepdims=0),
        helper.make_node("ArgMax", ["sb"], ["ib"], axis=-1, keepdims=0),
        helper.make_node("Mul", ["ia", "k81"], ["hi"]),
        helper.make_node("Add", ["hi", "ib"], ["code0"]),
        helper.make_node("Add", ["code0", "offset"], ["code1"]),
        # keep ceil(feats_length / stride) codes: the length input matters, as in the real model
        helper.make_node("Cast", ["feats_length"], ["len64"], to=TensorProto.INT64),
        helper.make_node("Add", ["len64", "round_up"], ["len_up"]),
        helper.make_node("Div", ["len_up", "step"], ["n_codes"]),
        helper.make_node("Slice", ["code1", "zero", "n_codes", "ax1"], ["code2"]),
        helper.make_node("Cast", ["code2"], ["codes"], to=out_type),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_s3_tokenizer",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("codes", out_type, [1, "L"])],
        inits,
    )
    return _save(graph, path)


def s3_codes(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """numpy twin of ``s3_tokenizer``: (128, T) features -> (ceil(T/4),) int64 codes."""
    wa, wb = s3_weights(seed)
    picked = feats.T[::4].astype(np.float32)  # (ceil(T/4), 128)
    codes = 81 * np.argmax(picked @ wa, axis=-1) + np.argmax(picked @ wb, axis=-1)
    assert codes.shape[0] == math.ceil(feats.shape[1] / 4)
    return codes.astype(np.int64)


def campplus_weight(seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((80, 192)) / 8).astype(np.float32)


def campplus(path: Path, seed: int = 1, out_dim: int = 192) -> Path:
    w = campplus_weight(seed)[:, :out_dim]
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["peak"], axes=[1], keepdims=0),  # (1, 80)
        helper.make_node("MatMul", ["peak", "w"], ["output"]),  # (1, out_dim)
    ]
    graph = helper.make_graph(
        nodes,
        "fake_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_dim])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def campplus_embedding(feats: np.ndarray, seed: int = 1) -> np.ndarray:
    """numpy twin of ``campplus``: (T, 80) mean-subtracted fbank -> (192,)."""
    return feats.max(axis=0).astype(np.float32) @ campplus_weight(seed)
