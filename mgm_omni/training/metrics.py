"""Step metrics out: a CSV log, TensorBoard events (when installed), a loss-curve PNG and a progress bar.

Create these on rank 0 only (``enabled=info.is_main``); on other ranks they do nothing.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

CSV_NAME = "metrics.csv"
PNG_NAME = "loss.png"


def _tensorboard_writer(log_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the CSV has everything
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricsLogger:
    """Appends one row per logged step to ``<out_dir>/metrics.csv`` and mirrors it to TensorBoard.

    Args:
        out_dir: run folder; the CSV, ``tb/`` events and ``loss.png`` go here.
        enabled: false on non-main ranks: every method is a no-op.
        tensorboard: write TensorBoard events when ``torch.utils.tensorboard`` imports.
        resume_step: when resuming, rows (and events) logged after this step by the interrupted run are
            dropped, so the log reads as one unbroken run.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / CSV_NAME
        self.columns: list[str] = []
        self.tb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.csv_path.exists():
            rows = self.read()
            if resume_step is not None:
                rows = [r for r in rows if float(r["step"]) <= resume_step]
            self.columns = list(rows[0]) if rows else []
            self._rewrite(rows)
        if tensorboard:
            self.tb = _tensorboard_writer(self.out_dir / "tb", purge_step=resume_step)

    def read(self) -> list[dict[str, str]]:
        """The rows of the CSV so far."""
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[Mapping[str, object]]) -> None:
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` at ``step``; a key not seen before adds a column (earlier rows leave it empty)."""
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.columns]
        if new or not self.csv_path.exists():
            self.columns += new
            self._rewrite(self.read())
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), step)

    def plot(self, path: str | os.PathLike | None = None) -> Path | None:
        """Draw every ``*loss*`` column against step into a PNG (default ``<out_dir>/loss.png``).

        Returns the path, or None when disabled, with nothing logged, or without matplotlib.
        """
        if not self.enabled:
            return None
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.warning("matplotlib is not installed: no loss curve drawn")
            return None
        rows = self.read()
        keys = [k for k in self.columns if "loss" in k]
        if not rows or not keys:
            return None
        fig = Figure(figsize=(7, 4), dpi=100)  # no pyplot: no global figure state, Agg canvas only
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key in keys:
            pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(path) if path is not None else self.out_dir / PNG_NAME
        tmp = out.with_name(out.name + ".tmp.png")
        fig.savefig(tmp)
        os.replace(tmp, out)
        return out

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def progress_bar(total_steps: int, initial_step: int = 0, enabled: bool = True) -> tqdm:
    """A tqdm bar over optimiser steps (ETA from the steps left); call ``update(1)`` and ``set_postfix``."""
    return tqdm(total=total_steps, initial=initial_step, disable=not enabled, unit="step", dynamic_ncols=True)
