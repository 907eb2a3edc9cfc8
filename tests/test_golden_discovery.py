"""The parity tests run on any golden set of the same format: a copy of the golden folder with every
set, case file, checkpoint and variant renamed, one case dropped and the projector vectors cut to one
batch row, pointed at through ``$MGM_GOLDEN_DIR``, is discovered and passes (pytest in a subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from golden import DECODE_STEPS, REPO_ROOT, find_golden, golden_root, speechlm_checkpoint, variant_rows

GOLDEN_TEST_FILES = [
    "tests/test_projector.py", "tests/test_speech_lm.py", "tests/test_chunked_decode.py", "tests/test_text.py",
    "tests/test_config_checkpoint.py", "tests/test_vocoder.py", "tests/test_hift_golden.py", "tests/test_flow.py",
    "tests/test_audio_mel.py", "tests/test_token2wav.py",
]


def _replace(path: Path, write) -> None:
    """Swap a linked file for a written one."""
    path.unlink()
    write(path)


def renamed_copy(dst: Path) -> dict[str, str]:
    """Copy the golden root to ``dst`` with new names and a shape change; returns {old case: new case}.

    Files are symlinked (the golden files are only read) except those rewritten. Every top-level set
    folder is renamed; in a set with decode cases the SpeechLM checkpoint folder, each checkpoint name
    (in the case JSONs and its variant rows file), each case file and its keys in ``decode_steps.npz``
    get new names, and one case of the base checkpoint is left out; the projector vectors keep one
    batch row of two.
    """
    root = golden_root()

    def moved(path: Path) -> Path:
        first, *rest = path.relative_to(root).parts
        return dst.joinpath(f"renamed-{first[::-1]}", *rest)

    for path in root.rglob("*"):
        if path.is_file():
            target = moved(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    cases: dict[str, str] = {}
    for gdir in find_golden(DECODE_STEPS):
        assert gdir != root, "a golden root that is itself a set: point MGM_GOLDEN_DIR at its parent"
        cases.update(_rename_cases(gdir, moved(gdir)))
    for npz in dst.rglob("projector/projector_golden.npz"):
        _subset_projector(npz)
    return cases


def _rename_cases(src: Path, gdir: Path) -> dict[str, str]:
    speech = gdir / "speechlm"
    ckpt = speechlm_checkpoint(src)
    new_ckpt = speech / "tts-checkpoint-renamed"
    (speech / ckpt.name).rename(new_ckpt)
    decode = speech / "decode"
    runs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(decode.glob("*.json"))}
    ckpts = sorted({d["checkpoint"] for d in runs.values()})
    ckpt_names = {c: f"ckpt{chr(65 + i)}" for i, c in enumerate(ckpts)}
    for old, new in ckpt_names.items():
        rows = variant_rows(src, old)
        if rows is not None:
            (speech / rows.name).rename(speech / f"{new}_rows.safetensors")
    base = next(c for c in ckpts if variant_rows(src, c) is None)
    dropped = next(name for name, d in runs.items() if d["checkpoint"] == base)
    mapping = {}
    for i, (old, d) in enumerate(runs.items()):
        (decode / f"{old}.json").unlink()
        if old == dropped:
            continue
        new = mapping[old] = f"case{i:02d}-{ckpt_names[d['checkpoint']].lower()}"
        d = {**d, "checkpoint": ckpt_names[d["checkpoint"]], "prompt_name": f"prompt{i:02d}"}
        (decode / f"{new}.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    steps = np.load(src / DECODE_STEPS)
    renamed = {f"{mapping[k.split('/')[0]]}/{k.split('/', 1)[1]}": steps[k] for k in steps.files
               if k.split("/")[0] in mapping}
    _replace(gdir / DECODE_STEPS, lambda p: np.savez(p, **renamed))
    return mapping


def _subset_projector(npz: Path) -> None:
    data = dict(np.load(npz))
    n_out = data["out"].shape[1]
    data = {k: v[:n_out] if k == "out_flat" else v[:1] for k, v in data.items()}
    _replace(npz, lambda p: np.savez(p, **data))
    meta_path = npz.with_name("projector_golden.json")
    meta = json.loads(meta_path.read_text())
    meta["shapes"] = {k: list(data[k].shape) for k in meta.get("shapes", {})}
    _replace(meta_path, lambda p: p.write_text(json.dumps(meta)))


# ------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """(copy root, set dir of the decode cases in the copy, {old case: new case})."""
    if not find_golden(DECODE_STEPS):
        pytest.skip(f"no golden set with decode cases under {golden_root()} (set MGM_GOLDEN_DIR)")
    dst = tmp_path_factory.mktemp("golden-renamed")
    cases = renamed_copy(dst)
    return dst, _find(dst, DECODE_STEPS)[0], cases


def _pytest(golden_dir: Path, args: list[str], junit: Path, timeout: int) -> dict[str, tuple[str, str]]:
    """Run pytest on ``args`` against ``golden_dir``; {test name with params: (outcome, message)}."""
    env = {**os.environ, "MGM_GOLDEN_DIR": str(golden_dir)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, node.get("message", "")
        results[f"{case.get('classname')}::{case.get('name')}"] = (outcome, message)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return results


def _param_ids(results: dict, test: str) -> set[str]:
    return {name.split("[", 1)[1].rstrip("]") for name in results if name.split("[")[0].endswith(f"::{test}")}


def _check_discovery(results: dict, dst: Path, gdir: Path, cases: dict[str, str]) -> None:
    assert results and all(outcome == "passed" for outcome, _ in results.values()), {
        k: v for k, v in results.items() if v[0] != "passed"}
    set_id = str(gdir.relative_to(dst))
    # every renamed case, and nothing else, was collected for the per-case tests
    assert _param_ids(results, "test_golden_prompt_and_ids") == {f"{set_id}/{new}" for new in cases.values()}
    for old in cases:
        assert not any(old in name for name in results), old
    tokens = {t for name in results if "[" in name for t in re.split(r"[-/\[\]]", name.split("[", 1)[1])}
    assert not tokens & {p.name for p in golden_root().iterdir()}  # no set is known by its old name


def test_renamed_golden_copy_is_discovered_and_passes(renamed, tmp_path):
    """A fast subset: every test that reads the renamed or reshaped files, on the short cases."""
    dst, gdir, cases = renamed
    set_id = str(gdir.relative_to(dst))
    short = [new for new in cases.values() if variant_rows(gdir, _checkpoint(gdir, new)) is not None]
    hift_sets = [str(d.relative_to(dst)) for d in _find(dst, "hift/hift_outputs.safetensors")]
    args = [
        "tests/test_text.py::test_golden_prompt_and_ids",
        "tests/test_text.py::test_golden_chunk_text_follows_sentence_rules",
        "tests/test_text.py::test_tiny_checkpoint_loads_from_slow_files",
        "tests/test_config_checkpoint.py::test_speechlm_config_round_trip",
        "tests/test_projector.py::test_projector_matches_official_golden",
        "tests/test_speech_lm.py::test_official_checkpoint_loads",
        "tests/test_speech_lm.py::test_forward_and_loss_match_official",
        *[f"tests/test_speech_lm.py::test_teacher_forced_decode_logits_match_official[{set_id}/{c}]" for c in short],
        *[f"tests/test_chunked_decode.py::test_greedy_decode_reproduces_official[pytorch-step-{set_id}/{c}]"
          for c in short],
        f"tests/test_chunked_decode.py::test_batched_equals_one_by_one[{set_id}-pytorch-step]",
        *[f"tests/test_hift_golden.py::{t}[{s}]" for s in hift_sets
          for t in ("test_hift_golden_f0", "test_hift_golden_call_given_f0", "test_hift_golden_streaming_cache")],
    ]
    results = _pytest(dst, args, tmp_path / "junit.xml", timeout=600)
    _check_discovery(results, dst, gdir, cases)
    for arg in args:  # each named test ran (one given without params: for some set)
        path, test = arg.split("::", 1)
        name = f"{path.removesuffix('.py').replace('/', '.')}::{test}"
        assert any(k == name or k.startswith(name + "[") for k in results), arg


@pytest.mark.slow
def test_renamed_golden_copy_passes_every_golden_test(renamed, tmp_path):
    """Every test of the files that read golden vectors, against the renamed copy."""
    dst, gdir, cases = renamed
    results = _pytest(dst, [*GOLDEN_TEST_FILES, "-m", "not slow"], tmp_path / "junit.xml", timeout=3600)
    skipped = {k: v for k, v in results.items() if v[0] == "skipped"}
    assert not any("golden" in msg for _, msg in skipped.values()), skipped
    results = {k: v for k, v in results.items() if v[0] != "skipped"}
    _check_discovery(results, dst, gdir, cases)
    set_id = str(gdir.relative_to(dst))
    assert _param_ids(results, "test_teacher_forced_decode_logits_match_official") == {
        f"{set_id}/{new}" for new in cases.values()}


def _checkpoint(gdir: Path, case: str) -> str:
    return json.loads((gdir / "speechlm" / "decode" / f"{case}.json").read_text(encoding="utf-8"))["checkpoint"]


def _find(root: Path, marker: str) -> list[Path]:
    return sorted({p.parents[len(Path(marker).parts) - 1] for p in root.rglob(marker)})
