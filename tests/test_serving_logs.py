"""`mgm-omni serve` says where it listens and logs every request (no model needed for these routes)."""

from __future__ import annotations

import logging

import httpx
import pytest
from serving_fixtures import ScriptedBackend

from mgm_omni.serving.config import ServingConfig
from mgm_omni.serving.metrics import ServerMetrics
from mgm_omni.serving.server import BackgroundServer, log_to_stderr
from mgm_omni.serving.services import Services

pytest.importorskip("fastapi")


def test_server_logs_its_url_and_requests(tmp_path, caplog):
    services = Services(ServingConfig(voices_dir=tmp_path), engine=None, voices=None, backend=ScriptedBackend(),
                        metrics=ServerMetrics(int, int), model_id="none", tiny=False)
    with caplog.at_level(logging.INFO, logger="mgm_omni.serving"):
        server = BackgroundServer(services, close_services=False).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                assert client.get("/v1/models").status_code == 200
                assert client.get("/nowhere").status_code == 404
        finally:
            server.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert f"mgm-omni API on {server.url} (OpenAI base_url {server.url}/v1); requests are logged below, " \
           "Ctrl-C stops" in messages
    requests = [m for m in messages if m.startswith("127.0.0.1 ")]
    assert requests[0].startswith("127.0.0.1 GET /v1/models 200 ") and requests[0].endswith(" s")
    assert requests[1].startswith("127.0.0.1 GET /nowhere 404 ")


def test_serve_logs_to_stderr_once(capfd):
    loggers = [logging.getLogger(n) for n in ("mgm_omni.serving.server", "mgm_omni.serving.access")]
    try:
        log_to_stderr()
        log_to_stderr()  # a second call adds no second handler
        loggers[1].info("127.0.0.1 GET /health 200 0.00 s")
        err = capfd.readouterr().err
        assert err.count("127.0.0.1 GET /health 200 0.00 s") == 1
    finally:  # leave logging as other tests expect it
        for logger in loggers:
            logger.handlers = [h for h in logger.handlers if h.get_name() != "mgm-omni-serve"]
            logger.propagate, logger.level = True, logging.NOTSET
