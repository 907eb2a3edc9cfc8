"""What an eval run reads before any scoring: its splits (local files or a hub dataset) and hypotheses files.

Everything here fails early and once: a missing ``--data-path`` or a set where no split loads is one
:class:`~mgm_omni.eval.options.EvalError`, before a judge is loaded or a report is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from mgm_omni.eval.datasets import LONG_TTS_EVAL_SPLITS, DatasetError, EvalSplit, list_splits, load_split
from mgm_omni.eval.options import EvalError, EvalOptions


def read_hypotheses(path: str) -> dict[str, str]:
    """``{id, text}`` JSONL, or Kaldi-style ``ID TEXT`` lines."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read --hypotheses {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                rec = json.loads(line)
                out[str(rec["id"])] = str(rec.get("text") or "")
            except (ValueError, KeyError, TypeError):
                raise EvalError(
                    f"--hypotheses {path} line {n}: expected a JSON object with 'id' and 'text'"
                ) from None
        else:
            rid, _, text = line.strip().partition(" ")
            out[rid] = text.strip()
    return out


def _split_names(opts: EvalOptions) -> list[str]:
    if opts.splits:
        return list(opts.splits)
    path = Path(opts.data_path)
    if path.is_file():
        return [path.parent.name if path.stem == "meta" else path.stem]
    names = list_splits(path) if path.is_dir() else []
    if not names and path.is_dir() and next(path.rglob("*.trans.txt"), None):
        return [path.name]
    return names or list(LONG_TTS_EVAL_SPLITS)


def load_one(opts: EvalOptions, name: str) -> EvalSplit:
    """One split by name (a LibriSpeech set given directly is its own parent's split)."""
    path = Path(opts.data_path)
    if path.is_dir() and not opts.splits and not list_splits(path):  # a LibriSpeech set given directly
        return load_split(path.parent, name, opts.data_format, opts.language)
    return load_split(opts.data_path, None if path.is_file() else name, opts.data_format, opts.language)


def check_data_path(opts: EvalOptions) -> None:
    """A local ``--data-path`` must exist (anything else is read as a hub dataset id ``owner/name``)."""
    text = str(opts.data_path)
    hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not Path(text).expanduser().exists() and not hub_id:
        raise EvalError(f"--data-path {text}: no such file or directory")


def load_splits(opts: EvalOptions) -> dict[str, EvalSplit | DatasetError]:
    """Every split to evaluate, or why it cannot be loaded; raises one :class:`EvalError` when none can."""
    check_data_path(opts)
    loaded: dict[str, EvalSplit | DatasetError] = {}
    for name in _split_names(opts):
        try:
            loaded[name] = load_one(opts, name)
        except DatasetError as exc:
            loaded[name] = exc
    if all(isinstance(v, DatasetError) for v in loaded.values()):
        reasons = list(dict.fromkeys(str(v) for v in loaded.values()))
        raise EvalError(f"nothing to evaluate: {'; '.join(reasons)}")
    return loaded
