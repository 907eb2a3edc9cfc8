"""Open an ONNX model with onnxruntime on CPU, with one-line errors that say what to download or install.

The official reference front ends (``speech_tokenizer_v2.onnx``, ``campplus.onnx``) ship as ONNX files and run on
CPU through onnxruntime, one intra-op thread each (the official settings). onnxruntime is imported only here and
only when a model is opened, so the rest of the package works without it.
"""

from __future__ import annotations

import os
from pathlib import Path

ONNXRUNTIME_PIN = "onnxruntime==1.32.0"


class OnnxAssetError(FileNotFoundError):
    """An ONNX asset is missing, unreadable, or does not have the expected inputs and outputs."""


def open_session(path: str | os.PathLike, what: str, where: str, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` for ``path`` on the CPU provider.

    Args:
        path: the .onnx file.
        what: the asset's name for messages, e.g. ``"S3 speech tokenizer v2"``.
        where: how to obtain the file, appended to the message when it is missing.
        threads: ``intra_op_num_threads`` (1, as upstream; more threads were slower on shared 2-core machines).
    """
    path = Path(path)
    if not path.is_file():
        raise OnnxAssetError(f"{what} not found at {path}: {where}")
    try:
        import onnxruntime
    except ImportError:
        raise OnnxAssetError(f"{what} needs onnxruntime: pip install {ONNXRUNTIME_PIN}") from None
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: unused-initializer notices are noise here
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime's Fail/InvalidProtobuf/... derive from Exception only
        text = " ".join(str(err).split())[:300]
        raise OnnxAssetError(f"{what} at {path} is not a loadable ONNX model: {text}") from None
