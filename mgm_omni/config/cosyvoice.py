"""The CosyVoice2 asset description (``cosyvoice2/cosyvoice2.yaml``) without HyperPyYAML.

The official file is HyperPyYAML: ``!new:``/``!name:``/``!apply:`` tags build objects and ``!ref <key>``
refers to other keys (with arithmetic such as ``<chunk_size> * <token_mel_ratio>``). We read it as
data: tagged mappings become dicts with a ``_target_`` entry and references are resolved, so the
flow/HiFT modules can be built from plain keyword arguments.
"""

from __future__ import annotations

import ast
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgm_omni.config import ConfigError, JsonConfig, _require

_REF = re.compile(r"<([A-Za-z_][\w.]*)>")


class _Tagged(dict):
    """A ``!new:``/``!name:``/``!apply:`` node: its kwargs plus ``_target_`` and ``_kind_``."""


class _Ref(str):
    """A ``!ref`` expression still to be resolved."""


def _loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.1 reads "1e-06" (no dot) as a string; HyperPyYAML (ruamel, YAML 1.2) reads a float.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        kind, _, target = suffix.partition(":")
        if isinstance(node, yaml.MappingNode):
            value = _Tagged(loader.construct_mapping(node, deep=True))
        elif isinstance(node, yaml.SequenceNode):
            value = _Tagged(_args_=loader.construct_sequence(node, deep=True))
        else:
            scalar = loader.construct_scalar(node)
            value = _Tagged(_args_=[scalar] if scalar != "" else [])
        value["_target_"] = target
        value["_kind_"] = kind
        return value

    def ref(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        return _Ref(loader.construct_scalar(node))

    for kind in ("new", "name", "apply"):
        Loader.add_multi_constructor(f"!{kind}:", lambda loader, s, n, k=kind: tagged(loader, f"{k}:{s}", n))
    Loader.add_constructor("!ref", ref)
    Loader.add_constructor("!copy", ref)
    return Loader


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.USub: operator.neg}


def _eval_arith(expr: str) -> Any:
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ConfigError(f"unsupported !ref expression {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _resolve(node: Any, root: dict, seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, _Ref):
        keys = _REF.findall(node)
        if _REF.fullmatch(node.strip()):
            return _resolve(_lookup(root, keys[0], node), root, seen + (keys[0],))
        values = {k: _resolve(_lookup(root, k, node), root, seen + (k,)) for k in keys}
        expr = _REF.sub(lambda m: repr(values[m.group(1)]), node)
        return _eval_arith(expr)
    if isinstance(node, dict):
        return {k: _resolve(v, root, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, seen) for v in node]
    return node


def _lookup(root: dict, dotted: str, expr: str) -> Any:
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"!ref {expr!r}: key {dotted!r} not found")
        node = node[part]
    return node


def read_hyperpyyaml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a HyperPyYAML file into plain data with references resolved."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return _resolve(raw, raw)


@dataclass
class CosyVoice2Config(JsonConfig):
    """What we need of ``cosyvoice2.yaml``: rates, chunking, and the flow / HiFT constructor kwargs."""

    sample_rate: int = 24000
    spk_embed_dim: int = 192
    token_frame_rate: int = 25
    token_mel_ratio: int = 2
    chunk_size: int = 25
    num_decoding_left_chunks: int = -1
    flow: dict = field(default_factory=dict)
    hift: dict = field(default_factory=dict)
    feat_extractor: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}")
        _require(self.token_frame_rate > 0 and self.token_mel_ratio > 0, "token_frame_rate and token_mel_ratio must be positive")
        _require(self.chunk_size > 0, f"chunk_size must be positive, got {self.chunk_size}")

    @property
    def mel_frame_rate(self) -> int:
        return self.token_frame_rate * self.token_mel_ratio

    @property
    def samples_per_token(self) -> int:
        return self.sample_rate // self.token_frame_rate

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> CosyVoice2Config:
        return cls.from_dict(read_hyperpyyaml(path))


def strip_tags(node: Any) -> Any:
    """Drop ``_target_``/``_kind_`` markers, leaving constructor kwargs only."""
    if isinstance(node, dict):
        return {k: strip_tags(v) for k, v in node.items() if k not in ("_target_", "_kind_")}
    if isinstance(node, list):
        return [strip_tags(v) for v in node]
    return node


def to_resolved(node: dict) -> dict:
    """A tagged yaml object as resolved constructor kwargs: ``{"class", "kwargs", <sub-object>: {...}}``.

    Sub-objects (``encoder``, ``decoder``, ``estimator``, ``f0_predictor``) nest under their own key;
    an ``omegaconf.DictConfig`` (``cfm_params``) becomes a plain kwarg dict.
    """
    if not isinstance(node, dict) or "_target_" not in node:
        raise ConfigError("expected a !new: object")
    out: dict[str, Any] = {"class": node["_target_"], "kwargs": {}}
    for key, value in node.items():
        if key in ("_target_", "_kind_"):
            continue
        if isinstance(value, dict) and "_target_" in value:
            if value["_target_"].endswith("DictConfig"):
                out["kwargs"][key] = strip_tags(value.get("content", {}))
            else:
                out[key] = to_resolved(value)
        else:
            out["kwargs"][key] = strip_tags(value)
    return out
