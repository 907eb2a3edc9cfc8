"""``mgm-omni eval``: load splits, optionally generate, score every item (resumable, parallel), report.

Layout under ``--output-dir`` (the official one, plus ours under ``eval/``)::

    samples/<split>/<id>.wav          system output (read; written by --generate)
    timings/<split>/<id>.json         generation timings (from --generate, or supplied by another system)
    wer_<split>.json                  the official report: per-file dicts, then {size, wer}
    eval/<split>/items/<id>.json      one record per item; a finished, matching record is reused on resume
    eval/summary.json                 every split's summary (no clock times: a resumed run writes the same)
    eval/report.md, eval/drift.png, eval/latency.png

The ASR task (``--task asr``) scores a transcriber (``--judge``, or ``--hypotheses``) on the dataset's own
audio with the same normalisation and aggregation.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import re
import sys
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

from mgm_omni.eval.datasets import DatasetError, EvalSplit
from mgm_omni.eval.generate import generate_missing, read_timing, wav_path
from mgm_omni.eval.inputs import load_one, load_splits, read_hypotheses
from mgm_omni.eval.options import (
    EvalError,
    EvalOptions,
    add_common_arguments,
    add_eval_arguments,
    options_from_args,
)
from mgm_omni.eval.report import load_system, markdown_comparison, markdown_summary, plot_drift, plot_latency
from mgm_omni.eval.scoring import Scorer, is_reusable, write_record
from mgm_omni.eval.summary import summarize_split, write_official_report

log = logging.getLogger(__name__)


def record_path(output_dir: Path, split: str, item_id: str) -> Path:
    safe = re.sub(r"[^\w.-]", "_", item_id)
    if safe != item_id:  # keep distinct ids distinct after sanitising
        safe = f"{safe}-{zlib.crc32(item_id.encode('utf-8')):08x}"
    return output_dir / "eval" / split / "items" / f"{safe}.json"


# ----------------------------------------------------------------------------------- worker processes

_WORKER: Scorer | None = None


def _init_worker(config, device: str, threads: int) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(threads)
    _WORKER = Scorer(config, device=device, threads=threads)


def _score_in_worker(args):
    return _WORKER.score(*args)


def _keep(path: Path, record: dict) -> None:
    # A bad list line is re-checked every run (it costs nothing), and its id may duplicate a good item's.
    if record["status"] != "bad_input":
        write_record(path, record)


def _score_items(tasks: list[tuple], scorer: Scorer, opts: EvalOptions, out_paths: list[Path]) -> list[dict]:
    """Score ``tasks`` (argument tuples of ``Scorer.score``), writing each record as soon as it is done."""
    results: list[dict | None] = [None] * len(tasks)
    if opts.jobs == 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            results[i] = scorer.score(*task)
            _keep(out_paths[i], results[i])
        return results
    ctx = mp.get_context("spawn")  # no fork: torch and onnxruntime thread pools do not survive it
    with ProcessPoolExecutor(
        opts.jobs, mp_context=ctx, initializer=_init_worker, initargs=(opts.score, opts.device, opts.threads)
    ) as pool:
        futures = {pool.submit(_score_in_worker, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            _keep(out_paths[i], results[i])
    return results


# ------------------------------------------------------------------------------------------- one split


def evaluate_split(opts: EvalOptions, name: str, scorer: Scorer, hypotheses: dict[str, str] | None,
                   split: EvalSplit | DatasetError | None = None) -> dict:
    """(Load,) (generate,) score and summarise one split; every failure ends up counted in the summary."""
    out = Path(opts.output_dir)
    try:
        split = load_one(opts, name) if split is None else split
        if isinstance(split, DatasetError):
            raise split
    except DatasetError as exc:
        return summarize_split(name, [], error=str(exc))
    items = split.items[: opts.limit] if opts.limit else split.items
    notes: list[str] = []
    if opts.task == "tts" and opts.generate is not None:
        (out / "samples" / name).mkdir(parents=True, exist_ok=True)  # items that fail show up as missing
        n, errors = generate_missing(items, out, name, opts.generate)
        notes += errors
        log.info("%s: generated %d files", name, n)
    unknown: list[str] = []
    if opts.task == "tts":
        audio_dir = out / "samples" / name
        if not audio_dir.is_dir():
            return summarize_split(
                name,
                [],
                source=split.source,
                fmt=split.format,
                error=f"no samples folder {audio_dir} (nothing was generated for this split)",
            )
        ids = split.ids
        unknown = [p.stem for p in audio_dir.glob("*.wav") if p.stem not in ids]
    records, tasks, paths, slots = [], [], [], []
    for item in items:
        audio = wav_path(out, name, item.id) if opts.task == "tts" else item.audio
        generation = read_timing(out, name, item.id) if opts.task == "tts" else None
        hyp = None if hypotheses is None else hypotheses.get(item.id)
        rpath = record_path(out, name, item.id)
        if not opts.fresh and rpath.is_file():
            try:
                old = json.loads(rpath.read_text(encoding="utf-8"))
                if hypotheses is None and is_reusable(old, opts.score, audio, generation):
                    records.append(old)
                    continue
            except ValueError:
                pass  # a corrupt record is simply scored again
        if hypotheses is not None and hyp is None and item.problem is None:
            item.problem = f"no hypothesis for id {item.id!r} in {opts.hypotheses}"
        slots.append(len(records))
        records.append(None)
        tasks.append((item, name, audio, hyp, generation))
        paths.append(rpath)
    for slot, rec in zip(slots, _score_items(tasks, scorer, opts, paths), strict=True):
        records[slot] = rec
    write_official_report(out, name, records)
    return summarize_split(
        name, records, source=split.source, fmt=split.format, unknown_files=unknown, notes=notes
    )


# ------------------------------------------------------------------------------------------- entry


def run(opts: EvalOptions, scorer: Scorer | None = None) -> dict:
    """Score every split of ``opts`` and write all outputs; returns the summary (also in eval/summary.json).

    ``scorer`` lets a caller share an already loaded judge/encoder (used with ``jobs == 1``). When no split
    can be loaded (a missing ``--data-path``, an unreachable hub) it raises one :class:`EvalError` and
    writes nothing.
    """
    out = Path(opts.output_dir)
    loaded = load_splits(opts)
    hypotheses = read_hypotheses(opts.hypotheses) if opts.hypotheses else None
    scorer = scorer or Scorer(opts.score, device=opts.device, threads=opts.threads)
    if opts.score.speaker_encoder != "none":
        scorer.encoder  # noqa: B018 - an unknown or missing encoder stops the run here, not item by item
    (out / "eval").mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, split in loaded.items():
        splits[name] = evaluate_split(opts, name, scorer, hypotheses, split)
        s = splits[name]
        print(
            f"{name}: WER: {s['wer']}"
            + (f"  ({s['error']})" if s.get("error") else f"  ({s['n_scored']}/{s['n_items']} scored)")
        )
    summary = {
        "task": opts.task,
        "data_path": str(opts.data_path),
        "score_config": asdict(opts.score),
        "generation": asdict(opts.generate) if opts.generate else None,
        "splits": splits,
    }
    (out / "eval" / "summary.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    (out / "eval" / "report.md").write_text(markdown_summary(summary), encoding="utf-8")
    if opts.plots:
        plot_drift(summary, out / "eval" / "drift.png")
        fps = {n: [r.get("first_packet_seconds") for r in _timings(out, n)] for n in splits}
        plot_latency(
            {n: [v for v in vals if v is not None] for n, vals in fps.items()}, out / "eval" / "latency.png"
        )
    print("Final Results:")
    for name, s in splits.items():
        print(f"{name}: {s['wer']}")
    print(f"report: {out / 'eval' / 'report.md'}")
    return summary


def _timings(out: Path, split: str) -> list[dict]:
    folder = out / "timings" / split
    return (
        [read_timing(out, split, p.stem) or {} for p in sorted(folder.glob("*.json"))]
        if folder.is_dir()
        else []
    )


def compare(opts: EvalOptions) -> str:
    """The side-by-side markdown table of several systems' output folders."""
    names = opts.names or tuple(Path(d).name for d in opts.compare)
    try:
        systems = {n: load_system(Path(d)) for n, d in zip(names, opts.compare, strict=True)}
    except (OSError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    table = markdown_comparison(systems)
    if opts.report:
        Path(opts.report).write_text(table, encoding="utf-8")
    print(table, end="")
    return table


def run_from_args(args: argparse.Namespace) -> int:
    """Entry used by ``mgm-omni eval`` (``mgm_omni.cli.eval_command.run``)."""
    opts = options_from_args(args)
    if opts.compare:
        compare(opts)
        return 0
    summary = run(opts)
    states = [s["state"] for s in summary["splits"].values()]
    return 1 if opts.strict and any(state != "ok" for state in states) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m mgm_omni.eval.runner --data-path ... --output-dir ...``."""
    parser = argparse.ArgumentParser(prog="mgm-omni eval", description=__doc__.split("\n")[0])
    add_eval_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return run_from_args(args)
    except (ValueError, RuntimeError, OSError) as exc:  # EvalError, DatasetError, JudgeError, ...
        if args.verbose:
            raise
        print(f"mgm-omni eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
