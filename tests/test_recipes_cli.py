"""``mgm-omni train STAGE --config ...`` runs the recipe with the recipe's own arguments; bad input is one error."""

from __future__ import annotations

import pytest

from mgm_omni.cli import build_parser, main
from mgm_omni.cli.train import STAGES, parse_train_args
from mgm_omni.training.synthetic_corpus import write_char_tokenizer, write_synthetic_corpus

from recipe_runner import CONFIGS, RECIPES, final_weights, one_thread


def test_every_stage_has_a_recipe_and_the_parser_reads_overrides():
    assert all((RECIPES / f"{stage}.py").is_file() for stage in STAGES)
    top = build_parser().parse_args(["train", "flow", "a.b=1", "--config", "x.yaml", "--resume", "train.max_steps=3"])
    args = parse_train_args(top.train_args)
    assert (args.stage, args.config, args.resume, args.overrides) == ("flow", "x.yaml", True,
                                                                      ["a.b=1", "train.max_steps=3"])


def test_train_runs_a_stage_then_resumes_it(tmp_path, capsys):
    write_char_tokenizer(tmp_path / "tok")
    write_synthetic_corpus(tmp_path / "corpus", speakers=2, items_per_speaker=2, longform_per_speaker=0, audio=False)
    common = ["--config", str(CONFIGS / "speechlm_stage2_tiny.yaml"), f"data.shards={tmp_path / 'rows'}",
              f"data.manifests=[{tmp_path / 'corpus' / 'manifest.jsonl'}]", f"data.text_frontend={tmp_path / 'tok'}",
              f"train.out_dir={tmp_path / 'out'}", "train.max_steps=3"]
    with one_thread():
        assert main(["train", "speechlm_stage2", *common, "--stop-after", "2"]) == 0
        assert "speechlm_stage2: step 2, loss" in capsys.readouterr().err
        assert main(["train", "speechlm_stage2", *common, "--resume"]) == 0
    assert "step 3" in capsys.readouterr().err and (tmp_path / "out" / "model" / "config.json").is_file()
    assert final_weights(tmp_path / "out")


@pytest.mark.parametrize("argv, message", [
    (["train", "flow", "--config", "missing.yaml"], "no such file"),
    (["train", "flow", "--config", str(CONFIGS / "flow_tiny.yaml"), "bogus.key=1"], "no section 'bogus'"),
    (["train", "flow", "--config", str(CONFIGS / "flow_tiny.yaml"), "train.warmup_step=1"], "did you mean 'warmup_steps'"),
])
def test_bad_input_is_one_error_before_any_work(argv, message, capsys):
    assert main(argv) != 0
    assert message in capsys.readouterr().err
