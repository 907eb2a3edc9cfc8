"""Training config from YAML, and the metrics outputs: CSV, TensorBoard events, loss-curve PNG, progress bar."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest

from mgm_omni.config import ConfigError
from mgm_omni.training.config import (
    LoaderConfig,
    TrainConfig,
    from_dict,
    load_train_config,
    read_yaml,
    to_dict,
)
from mgm_omni.training.metrics import MetricsLogger, progress_bar

YAML = """
model:
  hidden: 32
train:
  lr: 2.0e-4
  betas: [0.9, 0.98]
  warmup_steps: 10
  max_steps: 100
  precision: fp32
  strategy: ddp
  loader:
    num_workers: 1
"""


def test_train_config_from_yaml(tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(YAML)
    cfg = load_train_config(path, max_steps=200)
    assert cfg.lr == 2e-4 and cfg.betas == (0.9, 0.98) and cfg.max_steps == 200 and cfg.strategy == "ddp"
    assert cfg.loader == LoaderConfig(num_workers=1, persistent_workers=True)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg  # what is saved beside a checkpoint reads back

    @dataclass
    class ModelConfig:  # a recipe's own section reads the same way
        hidden: int

    assert from_dict(ModelConfig, read_yaml(path, "model")).hidden == 32


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"warmup": 5}, "unknown key 'warmup'.*did you mean 'warmup_steps'"),
        ({"precision": "fp16"}, "precision"),
        ({"warmup_steps": 20, "max_steps": 10}, "warmup_steps"),
        ({"strategy": "zero3"}, "strategy"),
        ({"accum_steps": 0}, "accum_steps"),
        ({"loader": {"num_workers": -1}}, "num_workers"),
    ],
)
def test_train_config_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, bad)


def test_csv_png_and_resume_truncation(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 6):
        logger.log(step, {"loss": 5.0 / step, "lr": 1e-3})
    logger.log(6, {"loss": 0.7, "lr": 1e-3, "eval_loss": 0.9})  # a new column appears
    png = logger.plot()
    logger.close()
    rows = logger.read()
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[0]["eval_loss"] == "" and float(rows[5]["eval_loss"]) == 0.9
    assert png == tmp_path / "loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    resumed = MetricsLogger(
        tmp_path, tensorboard=False, resume_step=4
    )  # steps 5, 6 were after the checkpoint
    resumed.log(5, {"loss": 0.5, "lr": 1e-3})
    assert [(r["step"], r["loss"]) for r in resumed.read()][-2:] == [("4", "1.25"), ("5", "0.5")]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "rank1", enabled=False)
    logger.log(1, {"loss": 1.0})
    assert logger.plot() is None and not (tmp_path / "rank1").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_events(tmp_path):
    logger = MetricsLogger(tmp_path)
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_progress_bar_counts_steps(capsys):
    bar = progress_bar(total_steps=10, initial_step=4)
    bar.update(1)
    assert (bar.n, bar.total) == (5, 10)
    bar.close()
    assert "5/10" in capsys.readouterr().err
    assert progress_bar(10, enabled=False).disable
