"""``mgm-omni serve`` (OpenAI-compatible HTTP API) and ``mgm-omni demo`` (Gradio web demo)."""

from __future__ import annotations

import argparse

from mgm_omni.cli.extras import require


def run_serve(args: argparse.Namespace) -> int:
    require("serve", "serve")  # before loading models: a missing package is named at once
    from mgm_omni.serving.server import serve, services_from_args

    services = services_from_args(args, args.api_key)
    serve(services, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    require("demo", "demo")
    from mgm_omni.serving.server import services_from_args
    from mgm_omni.serving.web_demo import launch

    services = services_from_args(args)
    try:
        launch(services, host=args.host, port=args.port, share=args.share)
    finally:
        services.close()
    return 0
