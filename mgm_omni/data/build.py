"""Build a corpus: check everything, plan, render in parallel and resumably, write manifests atomically.

Layout of ``cfg.out``::

    audio/<family>/<speaker>/<id>.flac   rendered items
    shards/run-*.jsonl                   rows appended as items finish (the resume log)
    manifest.jsonl  pairs.jsonl          manifests (atomic rename), rewritten after each engine family and
                                         every 10 minutes; build.json says whether the build is complete
    build.json  stats.txt  failures.jsonl

Every check (voices, text sources, engines, the roster, the output directory) runs before any rendering,
and nothing is written to ``cfg.out`` before they pass. A rerun skips items whose row is in a shard and whose
audio reads back with the row's length.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .. import __version__
from .config import ConfigError, CorpusConfig
from .engines import PROBE_TEXT, EngineError, EngineSet, engine_version, missing_engine
from .manifest import Manifest, ManifestRow, ShardWriter, audio_matches
from .pairs import make_pairs
from .plan import FAMILY_ORDER, Item, make_plan, plan_summary
from .postprocess import to_corpus
from .render import RenderContext, render_item
from .stats import corpus_stats, format_stats
from .text_sources import load_sentences
from .voices import parse_voice

BUILDER_VERSION = f"mgm-omni {__version__} data-builder 1"
CHECKPOINT_SECONDS = 600.0  # rewrite manifest.jsonl / pairs.jsonl this often while rendering
MAX_FAILURE_RATE = 0.5  # a family failing more often than this (after 40 items) stops the build


@dataclass
class BuildReport:
    planned: int = 0
    skipped: int = 0  # already rendered (resume)
    rendered: int = 0
    failed: int = 0
    audio_seconds: dict[str, float] = field(default_factory=dict)  # rendered this run, per family
    wall_seconds: dict[str, float] = field(default_factory=dict)
    manifest: Path | None = None

    def throughput(self) -> dict[str, float]:
        """Audio seconds rendered per wall-clock second, per family (this run)."""
        return {f: round(self.audio_seconds[f] / self.wall_seconds[f], 2)
                for f in self.audio_seconds if self.wall_seconds.get(f, 0) > 0}


def _check_writable(out: Path) -> None:
    """Create ``out`` (and ``shards/``) and write a probe file there; ConfigError if that fails."""
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc


def _probe(engines: EngineSet, items: list[Item], cfg: CorpusConfig) -> None:
    """Render one short sentence per engine and language (festival: per voice, each is its own package)."""
    seen = set()
    for it in items:
        voice = parse_voice(it.voice)
        key = (voice.engine, it.lang, voice.name if voice.engine == "festival" else "")
        if key in seen:
            continue
        seen.add(key)
        try:
            to_corpus(*engines.synthesize(voice, PROBE_TEXT[it.lang], it.lang, it.speaker), cfg.signal,
                      vtl=it.speaker.vtl)
        except Exception as exc:  # noqa: BLE001 - any failure here means the engine is unusable
            raise EngineError(f"voice {voice.key} ({it.lang}) cannot render: {exc}") from exc


def prepare(cfg: CorpusConfig) -> list[Item]:
    """The checks that need no rendering, then the plan (voices were checked by the config).

    Raises ConfigError / SourceError / EngineError and writes nothing.
    """
    for family in sorted({k.split("/")[0] for k in cfg.budget_keys()}):
        reason = missing_engine(family)
        if reason:
            raise EngineError(f"engine family {family} cannot run: {reason}")
    blocker = cfg.out
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if not blocker.is_dir() or not os.access(blocker, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {cfg.out} is not writable ({blocker} is not a writable directory)")
    items = make_plan(cfg, load_sentences(cfg.sources))
    if not items:
        raise ConfigError("the plan is empty")
    return items


def _done_rows(cfg: CorpusConfig, planned: dict[str, Item]) -> dict[str, ManifestRow]:
    done = {}
    for shard in sorted((cfg.out / "shards").glob("*.jsonl")):
        for row in Manifest.read(shard, partial_tail=True):
            if row.id in planned and audio_matches(row, cfg.out):
                done[row.id] = row
    return done


def write_outputs(cfg: CorpusConfig, items: list[Item], done: dict[str, ManifestRow], complete: bool,
                  report: BuildReport, versions: dict[str, str]) -> None:
    rows = [done[it.id] for it in items if it.id in done]
    pairs = make_pairs(rows, cfg.pairs_per_speaker, cfg.seed)
    Manifest.write(cfg.out / "pairs.jsonl", pairs)
    Manifest.write(cfg.out / "manifest.jsonl", rows)
    stats = format_stats(corpus_stats(rows, pairs))
    info = {"builder_version": BUILDER_VERSION, "complete": complete, "planned": len(items), "rendered": len(rows),
            "failed_this_run": report.failed, "throughput_audio_s_per_s": report.throughput(),
            "engine_versions": versions, "config": cfg.to_dict(),
            "speakers": {s.id: {"family": s.family, "made": s.made(), "transform": s.transform(),
                                "dev_speaker": s.id in cfg.dev_speakers} for s in cfg.roster}}
    for name, text in (("build.json", json.dumps(info, indent=1, ensure_ascii=False, default=str)),
                       ("stats.txt", stats + "\n")):
        tmp = cfg.out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, cfg.out / name)


_WORKER: dict = {}


def _init_worker(ctx: RenderContext) -> None:
    _WORKER["ctx"], _WORKER["engines"] = ctx, EngineSet(str(ctx.out / ".tmp"))


def _work(item: Item):
    try:
        return item.id, render_item(item, _WORKER["engines"], _WORKER["ctx"]), None
    except Exception as exc:  # noqa: BLE001 - one bad sentence must not stop a multi-hour build
        return item.id, None, f"{type(exc).__name__}: {exc}"


def build_corpus(cfg: CorpusConfig, progress: bool = True, log=None, plan_only: bool = False) -> BuildReport:
    """Build (or resume) the corpus described by ``cfg``; returns what was done.

    ``plan_only`` stops after the checks and logs the plan (items and estimated hours); nothing is written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = BuildReport()
    engines = EngineSet()
    try:
        items = prepare(cfg)
        planned = {it.id: it for it in items}
        report.planned = len(items)
        log(f"data build plan ({len(cfg.roster)} speakers, dev speakers {', '.join(cfg.dev_speakers)}):\n"
            + plan_summary(items))
        if plan_only:
            return report
        versions = {f: engine_version(f) for f in FAMILY_ORDER if any(it.family == f for it in items)}
        done = _done_rows(cfg, planned) if (cfg.out / "shards").is_dir() else {}
        todo = [it for it in items if it.id not in done]
        _probe(engines, todo, cfg)  # every voice still to render works, before anything is written
        _check_writable(cfg.out)
        (cfg.out / ".tmp").mkdir(exist_ok=True)
        report.skipped = len(items) - len(todo)
        log(f"data build: {len(items)} items planned, {report.skipped} already rendered, {len(todo)} to render")
        ctx = RenderContext(cfg.out, cfg.signal, BUILDER_VERSION, versions)
        shard = ShardWriter(cfg.out / "shards" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl")
        failures = ShardWriter(cfg.out / "failures.jsonl", fsync_every=1)
        pool = None
        if cfg.jobs > 1 and todo:
            pool = mp.get_context("spawn").Pool(cfg.jobs, initializer=_init_worker, initargs=(ctx,))
        else:
            _WORKER["ctx"], _WORKER["engines"] = ctx, engines
        try:
            families = [f for f in FAMILY_ORDER if any(it.family == f for it in items)]
            for i, family in enumerate(families):
                group = [it for it in todo if it.family == family]
                def checkpoint(final: bool = False, last=i == len(families) - 1):
                    write_outputs(cfg, items, done, final and last and len(done) == len(items), report, versions)

                if group:
                    _render_group(family, group, pool, shard, failures, done, report, progress, checkpoint)
                checkpoint(final=True)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            shard.close()
            failures.close()
        report.manifest = cfg.out / "manifest.jsonl"
        log(f"data build: rendered {report.rendered}, skipped {report.skipped}, failed {report.failed}; "
            f"throughput (audio s per s) {report.throughput()}; manifest {report.manifest}")
        return report
    finally:
        engines.close()


def _render_group(family, group, pool, shard, failures, done, report, progress, checkpoint) -> None:
    t0, n_fail = time.perf_counter(), 0
    last_checkpoint = t0
    results = pool.imap_unordered(_work, group, chunksize=1) if pool is not None else map(_work, group)
    bar = tqdm(results, total=len(group), desc=f"render {family}", unit="item", disable=not progress,
               mininterval=0.5 if sys.stderr.isatty() else 30, file=sys.stderr)
    for k, (item_id, row, error) in enumerate(bar, 1):
        if row is None:
            n_fail += 1
            report.failed += 1
            failures.append(_Failure(item_id, error))
            if k >= 40 and n_fail > MAX_FAILURE_RATE * k:
                raise EngineError(f"{family}: {n_fail} of {k} items failed (last: {error}); see failures.jsonl")
            continue
        shard.append(row)
        done[item_id] = row
        report.rendered += 1
        report.audio_seconds[family] = report.audio_seconds.get(family, 0.0) + row.duration
        if time.perf_counter() - last_checkpoint > CHECKPOINT_SECONDS:
            checkpoint()  # the manifests grow during long families (Kokoro takes hours)
            last_checkpoint = time.perf_counter()
    report.wall_seconds[family] = report.wall_seconds.get(family, 0.0) + time.perf_counter() - t0


@dataclass
class _Failure:
    id: str
    error: str
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
