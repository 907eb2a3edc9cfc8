"""Benchmarks as data: Long-TTS-Eval, seed-tts-eval lists, LibriSpeech-style ASR sets and plain JSONL.

Every loader returns an ``EvalSplit`` of ``EvalItem``s. A bad line (invalid JSON, a wrong number of ``|``
fields, a missing id or text, a duplicate id) does not stop loading: it becomes an item whose ``problem`` says
what is wrong and where, so the run reports and counts it. Whole-split failures (nothing at the path, the hub
unreachable) raise ``DatasetError`` with a one-line message.

Local layouts accepted for ``--data-path``:
  * a directory holding ``<split>.jsonl`` (one per split; Long-TTS-Eval exported this way keeps its names),
  * a ``.jsonl`` file, a seed-tts-eval list file (``id|ref_text|ref_audio|text``, e.g. ``meta.lst``),
  * a directory holding ``<split>/meta.lst`` or ``<split>.lst`` (the seed-tts-eval layout: ``en/meta.lst``),
  * a LibriSpeech-style tree (``*.trans.txt`` lines ``ID TRANSCRIPT``, ``ID.flac``/``ID.wav`` beside them),
    given as the set directory itself or as its parent with the set as ``split``.
Anything else that looks like ``owner/name`` is read from the hub (``datasets`` if installed, else the
``huggingface_hub`` snapshot's JSONL files).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mgm_omni.eval.normalize import guess_language, language_of_split

LONG_TTS_EVAL_REPO = "wcy1122/Long-TTS-Eval"
LONG_TTS_EVAL_SPLITS = ("long_tts_eval_en", "long_tts_eval_zh", "hard_tts_eval_en", "hard_tts_eval_zh")
AUDIO_SUFFIXES = (".flac", ".wav", ".mp3", ".ogg", ".m4a")


class DatasetError(ValueError):
    """A benchmark split that cannot be found or read as a whole."""


@dataclass
class EvalItem:
    """One test sentence: what to say (or what was said) and, for some sets, audio that goes with it."""

    id: str
    text: str
    text_norm: str | None = None
    language: str = "en"
    audio: Path | None = None  # the input audio of an ASR item
    ref_audio: Path | None = None  # the voice prompt of a voice-cloning item
    ref_text: str | None = None
    problem: str | None = None  # why this item cannot be used, set by the loader


@dataclass
class EvalSplit:
    name: str
    items: list[EvalItem]
    source: str
    format: str

    @property
    def ids(self) -> set[str]:
        return {it.id for it in self.items}


def _language(split: str, text: str, given: str | None) -> str:
    if given in ("en", "zh"):
        return given
    return language_of_split(split) or guess_language(text)


def _resolve(base: Path, value) -> Path | None:
    if not value:
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


def _mark_duplicates(items: list[EvalItem]) -> list[EvalItem]:
    seen: set[str] = set()
    for it in items:
        if it.id in seen and it.problem is None:
            it.problem = f"duplicate id {it.id!r}"
        seen.add(it.id)
    return items


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) of a UTF-8 text file, blank lines left out."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def read_jsonl(path: Path, split: str, language: str | None = None) -> EvalSplit:
    """Records ``{id, text, text_norm?, language?, audio?, ref_audio?, ref_text?}``, one per line."""
    items: list[EvalItem] = []
    for n, line in _numbered_lines(path):
        where = f"{path.name} line {n}"
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            items.append(EvalItem(f"{split}-line{n}", "", problem=f"{where}: invalid JSON ({exc})"))
            continue
        rid, text = rec.get("id"), rec.get("text")
        if rid in (None, "") or not isinstance(text, str):
            items.append(
                EvalItem(str(rid or f"{split}-line{n}"), "", problem=f"{where}: needs 'id' and 'text'")
            )
            continue
        items.append(
            EvalItem(
                str(rid),
                text,
                rec.get("text_norm"),
                _language(split, text, rec.get("language") or language),
                _resolve(path.parent, rec.get("audio")),
                _resolve(path.parent, rec.get("ref_audio")),
                rec.get("ref_text"),
            )
        )
    return EvalSplit(split, _mark_duplicates(items), str(path), "jsonl")


def read_seed_tts_list(path: Path, split: str, language: str | None = None) -> EvalSplit:
    """seed-tts-eval ``id|ref_text|ref_audio|text`` lines; ``ref_audio`` is relative to the list's folder."""
    items: list[EvalItem] = []
    for n, line in _numbered_lines(path):
        fields = line.rstrip("\n").split("|")
        if len(fields) != 4:
            rid = fields[0].strip() or f"{split}-line{n}"
            items.append(
                EvalItem(
                    rid,
                    "",
                    problem=f"{path.name} line {n}: expected 4 '|'-separated fields "
                    f"(id|ref_text|ref_audio|text), got {len(fields)}",
                )
            )
            continue
        rid, ref_text, ref_audio, text = (f.strip() for f in fields)
        lang = _language(split, text, language)
        if lang == "zh":  # the official seed-tts driver removes spaces from Chinese targets
            text = text.replace(" ", "")
        items.append(
            EvalItem(
                rid,
                text,
                None,
                lang,
                None,
                _resolve(path.parent, ref_audio),
                ref_text,
                None if rid and text else f"{path.name} line {n}: empty id or text",
            )
        )
    return EvalSplit(split, _mark_duplicates(items), str(path), "seed-tts")


def read_librispeech(root: Path, split: str, language: str = "en") -> EvalSplit:
    """Every ``*.trans.txt`` under ``root``; an item without its audio file keeps a ``problem``."""
    items: list[EvalItem] = []
    for trans in sorted(root.rglob("*.trans.txt")):
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            rid, _, text = line.strip().partition(" ")
            audio = next(
                (trans.parent / f"{rid}{s}" for s in AUDIO_SUFFIXES if (trans.parent / f"{rid}{s}").exists()),
                trans.parent / f"{rid}.flac",
            )
            problem = None if text.strip() else f"{trans.name} line {n}: no transcript"
            items.append(EvalItem(rid, text.strip(), None, language, audio, problem=problem))
    return EvalSplit(split, _mark_duplicates(items), str(root), "librispeech")


def _local(path: Path, split: str | None, fmt: str, language: str | None) -> EvalSplit:
    name = split or path.stem
    if path.is_file():
        if fmt == "jsonl" or (fmt == "auto" and path.suffix == ".jsonl"):
            return read_jsonl(path, name, language)
        if fmt in ("auto", "seed-tts"):
            return read_seed_tts_list(
                path, split or (path.parent.name if path.stem == "meta" else path.stem), language
            )
        raise DatasetError(f"{path}: a file cannot be read as format {fmt!r}")
    if split is None:
        raise DatasetError(
            f"{path} is a directory: pass --split (available: {', '.join(list_splits(path)) or 'none'})"
        )
    candidates = [
        (path / f"{split}.jsonl", "jsonl"),
        (path / split / "meta.lst", "seed-tts"),
        (path / f"{split}.lst", "seed-tts"),
    ]
    for cand, kind in candidates:
        if cand.is_file() and fmt in ("auto", kind):
            return (
                read_jsonl(cand, split, language)
                if kind == "jsonl"
                else read_seed_tts_list(cand, split, language)
            )
    for root in (path / split, path):
        if fmt in ("auto", "librispeech") and root.is_dir() and next(root.rglob("*.trans.txt"), None):
            return read_librispeech(root, split, language or "en")
    raise DatasetError(
        f"split {split!r} not found in {path} (looked for {split}.jsonl, {split}/meta.lst, "
        f"{split}.lst and *.trans.txt; available: {', '.join(list_splits(path)) or 'none'})"
    )


def list_splits(path: str | os.PathLike) -> list[str]:
    """Split names a local directory offers (``*.jsonl``, ``*.lst``, ``<name>/meta.lst``)."""
    p = Path(path)
    if not p.is_dir():
        return list(LONG_TTS_EVAL_SPLITS) if str(path) == LONG_TTS_EVAL_REPO else []
    names = {f.stem for f in p.glob("*.jsonl")} | {f.stem for f in p.glob("*.lst")}
    names |= {d.parent.name for d in p.glob("*/meta.lst")}
    return sorted(names)


def _from_hub(repo_id: str, split: str, language: str | None) -> EvalSplit:
    try:
        import datasets  # noqa: F401
    except ImportError:
        datasets = None
    try:
        if datasets is not None:
            rows = datasets.load_dataset(repo_id, split=split).to_list()
        else:
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=[f"*{split}*"]))
            files = sorted(root.rglob(f"*{split}*.jsonl"))
            if not files:
                raise DatasetError(
                    f"hub dataset {repo_id} has no {split}*.jsonl file (parquet needs `pip install datasets`)"
                )
            rows = [
                json.loads(line)
                for f in files
                for line in f.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, unknown split: one clear line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DatasetError(
            f"cannot load split {split!r} of {repo_id!r} from the hub (offline? pass --data-path DIR "
            f"holding {split}.jsonl): {reason}"
        ) from None
    items = [
        EvalItem(
            str(r.get("id")),
            str(r.get("text") or ""),
            r.get("text_norm"),
            _language(split, str(r.get("text") or ""), r.get("language") or language),
            problem=None if r.get("id") not in (None, "") and r.get("text") else "row needs id and text",
        )
        for r in rows
    ]
    return EvalSplit(split, _mark_duplicates(items), f"hub:{repo_id}", "hub")


def load_split(
    data_path: str | os.PathLike, split: str | None = None, fmt: str = "auto", language: str | None = None
) -> EvalSplit:
    """Load one split from a local path (see the module docstring) or, for ``owner/name``, from the hub.

    Args:
        data_path: file, directory or hub dataset id.
        split: split name (required for directories and the hub).
        fmt: ``auto``, ``jsonl``, ``seed-tts`` or ``librispeech``.
        language: force ``en``/``zh`` for every item (default: the record's field, the split suffix, or
            the text).
    """
    if fmt not in ("auto", "jsonl", "seed-tts", "librispeech"):
        raise DatasetError(f"unknown dataset format {fmt!r}")
    path = Path(data_path).expanduser()
    if path.exists():
        return _local(path, split, fmt, language)
    text = str(data_path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and split:
        return _from_hub(text, split, language)
    raise DatasetError(
        f"--data-path {text}: no such file or directory"
        + ("" if split else " (and a hub dataset needs --split)")
    )
