"""Run the API with uvicorn (``mgm-omni serve``), in the foreground or in a background thread (tests)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import uvicorn

from mgm_omni.serving.app import create_app
from mgm_omni.serving.services import Services


def services_from_args(args, api_key: str | None = None) -> Services:
    """Services from ``mgm-omni serve`` / ``demo`` arguments (notes about the model go to stderr)."""
    from mgm_omni.hub.tiny_mouth import cache_root
    from mgm_omni.serving.config import ServingConfig

    config = ServingConfig(
        voices_dir=Path(args.voices_dir) if args.voices_dir else cache_root() / "voices",
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


def serve(services: Services, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted; the engine stops with the server."""
    uvicorn.run(create_app(services), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


class BackgroundServer:
    """uvicorn in a daemon thread on ``host:port``: ``start()`` waits until it accepts connections."""

    def __init__(self, services: Services, host: str = "127.0.0.1", port: int | None = None,
                 close_services: bool = True) -> None:
        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(create_app(services, close_on_shutdown=close_services), host=self.host,
                                port=self.port, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
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
