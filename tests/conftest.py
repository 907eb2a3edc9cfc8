import os
import pathlib
import sys

# Busy-waiting OpenMP threads make a shared 2-core machine crawl (several-fold slower steps).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The vocoder's precision is measured per machine on first use; tests compare waves against float32
# references, so they pin it (tests/test_vocoder_choice.py exercises the choice itself).
os.environ.setdefault("MGM_OMNI_VOCODER_DTYPE", "float32")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))

# 2-core machines: keep intra-op threads bounded and results deterministic.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def one_thread():
    """One intra-op thread for a test (``pytestmark = pytest.mark.usefixtures("one_thread")`` for a module):
    tiny models gain nothing from more, and on a busy 2-core machine OpenMP spinning slows every step ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A cache folder holding the built-in tiny random models, used as ``$MGM_OMNI_CACHE`` (built once)."""
    from mgm_omni.hub.tiny_mouth import ensure_tiny_random

    root = tmp_path_factory.mktemp("mgm-cache")
    try:
        ensure_tiny_random(root)
    except RuntimeError as exc:  # the Qwen3 tokenizer package is missing
        pytest.skip(str(exc))
    mp = pytest.MonkeyPatch()
    mp.setenv("MGM_OMNI_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def tiny_own_mouth(tmp_path_factory):
    """A tiny random own-format mouth (phoneme front-end, units, flow) in a temporary folder; skips where the
    espeak-ng data for the phoneme tokenizer is missing."""
    from mgm_omni.hub.own_mouth_tiny import build_tiny_own_mouth

    try:
        return build_tiny_own_mouth(tmp_path_factory.mktemp("own") / "mouth")
    except Exception as exc:  # espeak-ng data (espeakng-loader) missing: no phoneme tokenizer
        if "espeak" in str(exc).lower():
            pytest.skip(f"G2P unavailable: {exc}")
        raise
