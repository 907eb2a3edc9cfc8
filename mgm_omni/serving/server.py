"""Run the API with uvicorn (``mgm-omni serve``), in the foreground or in a background thread (tests)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time

import uvicorn

from mgm_omni.serving.app import ACCESS_LOG, create_app
from mgm_omni.serving.services import Services

log = logging.getLogger(__name__)


def services_from_args(args, api_key: str | None = None) -> Services:
    """Services from ``mgm-omni serve`` / ``demo`` arguments (notes about the model go to stderr)."""
    from mgm_omni.serving.config import ServingConfig

    config = ServingConfig(
        voices_dir=args.voices_dir or None,  # None: the cache root's voices/
        max_rows=args.max_rows, max_batch=args.max_batch, max_queue=args.max_queue,
        max_input_chars=args.max_input_chars, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        api_key=api_key or os.environ.get("MGM_OMNI_API_KEY") or None)
    services = Services.load(config, model=args.model, mllm=args.mllm, device=args.device, dtype=args.dtype,
                             temperature=args.temperature)
    if services.tiny:
        print("NOTE: serving the built-in tiny RANDOM model: its audio is noise-like, not speech. Pass --model "
              "with an MGM-Omni-TTS checkpoint directory for real speech.", file=sys.stderr)
    if services.backend is None:
        print("NOTE: no MLLM loaded (--mllm): transcription and chat answer 503 model_not_loaded.", file=sys.stderr)
    return services


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class AnnouncingServer(uvicorn.Server):
    """uvicorn that logs where it listens once its socket is bound (port 0: the port it got)."""

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers:
            port = self.servers[0].sockets[0].getsockname()[1]
            url = f"http://{self.config.host}:{port}"
            log.info("mgm-omni API on %s (OpenAI base_url %s/v1); requests are logged below, Ctrl-C stops", url, url)


def log_to_stderr() -> None:
    """Show the server's start-up line and one line per request on stderr, whatever the CLI's log level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.set_name("mgm-omni-serve")
    for logger in (log, ACCESS_LOG):
        logger.setLevel(logging.INFO)
        if not any(h.get_name() == handler.get_name() for h in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False


def serve(services: Services, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted, logging the URL and every request; the engine stops with the server."""
    log_to_stderr()
    config = uvicorn.Config(create_app(services), host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    AnnouncingServer(config).run()


class BackgroundServer:
    """uvicorn in a daemon thread on ``host:port``: ``start()`` waits until it accepts connections."""

    def __init__(self, services: Services, host: str = "127.0.0.1", port: int | None = None,
                 close_services: bool = True) -> None:
        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(create_app(services, close_on_shutdown=close_services), host=self.host,
                                port=self.port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = AnnouncingServer(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
