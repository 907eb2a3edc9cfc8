"""`mgm-omni demo` says where it runs and points to --share (not Gradio's `share=True` advice for code)."""

from __future__ import annotations

import io

import httpx
import pytest

from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.metrics import ServerMetrics
from mgm_omni.serving.server import free_port
from mgm_omni.serving.services import Services


class _Voices:
    """A TEST DOUBLE of the voice registry: one name, nothing else (the page only lists voices at start)."""

    def names(self):
        return ["default"]

    def list(self):
        return []


def test_demo_start_up_lines(tmp_path, capsys):
    pytest.importorskip("gradio")
    from mgm_omni.serving.web_demo import launch

    services = Services(ServingConfig(voices_dir=tmp_path), engine=None, voices=_Voices(), backend=None,
                        metrics=ServerMetrics(int, int), model_id="none", tiny=True)
    port, out = free_port(), io.StringIO()
    demo = launch(services, port=port, block=False, out=out)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        demo.close()
    assert out.getvalue() == (f"MGM-Omni demo running on http://127.0.0.1:{port}/\n"
                              "Local only; to create a public link, restart with: mgm-omni demo --share\n")
    captured = capsys.readouterr()
    assert "share=True" not in captured.out + captured.err  # Gradio's own advice is for code, not the CLI
