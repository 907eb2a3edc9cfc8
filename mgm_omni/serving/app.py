"""The OpenAI-compatible FastAPI app: routes, API key, body limit, errors in the OpenAI format, metrics.

    services = Services.load(ServingConfig(...), model="tiny-random")
    app = create_app(services)          # serve with uvicorn (see ``server.py``)

Routes: ``POST /v1/audio/speech``, ``POST /v1/audio/transcriptions``, ``POST /v1/chat/completions``,
``GET|POST /v1/audio/voices``, ``DELETE /v1/audio/voices/{name}``, ``GET /v1/models``, ``GET /health``,
``GET /metrics``. Every error body is ``{"error": {"message", "type", "param", "code"}}``:

====  ==========================  ===============================================================
400   invalid_json, invalid_request, string_above_max_length, invalid_voice_name, voice_not_found
      (in a request body), invalid_audio, audio_too_long, unsupported_format, unsupported_value
401   invalid_api_key (missing or wrong ``Authorization: Bearer``)
403   voice_is_preset (deleting or overwriting a preset)
404   voice_not_found (DELETE), not_found (unknown route)
409   voice_exists
413   request_too_large (body over ``max_upload_bytes``)
429   queue_full (``Retry-After: 1``)
503   model_not_loaded (no MLLM: transcription and chat), frontend_unavailable
====  ==========================  ===============================================================
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mgm_omni.serving import speech_api, understanding_api
from mgm_omni.serving.errors import APIError
from mgm_omni.serving.http_input import BodyLimitMiddleware
from mgm_omni.serving.services import Services

PUBLIC_PATHS = ("/health",)
log = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("mgm_omni.serving.access")  # one line per request (``mgm-omni serve`` shows it)


def create_app(services: Services, close_on_shutdown: bool = True) -> FastAPI:
    """The app serving ``services``; ``close_on_shutdown`` stops the engine when the server stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if close_on_shutdown:
            services.close()

    app = FastAPI(title="mgm-omni", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.mllm_slots = asyncio.Semaphore(services.config.mllm_concurrency)  # chat + transcription at once
    # Added first, so it sits inside the auth/metrics middleware: a body that passes the limit while it is
    # read raises in the route's own call stack, where the APIError handler turns it into a 413.
    app.add_middleware(BodyLimitMiddleware, limit=services.config.max_upload_bytes)
    app.include_router(speech_api.router)
    app.include_router(understanding_api.router)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        err = APIError(500, f"internal error: {type(exc).__name__}: {exc}"[:300], "server_error", "internal_error")
        return JSONResponse(err.body(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query"))
        err = APIError(400, f"{param or 'request'}: {first.get('msg', 'invalid')}", param=param or None,
                       code="invalid_request")
        return JSONResponse(err.body(), status_code=400)

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):
        start = time.perf_counter()
        key = services.config.api_key
        if key and request.url.path not in PUBLIC_PATHS:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                err = APIError(401, "missing or invalid API key: send Authorization: Bearer <key>",
                               "authentication_error", "invalid_api_key")
                response = JSONResponse(err.body(), status_code=401)
                _count(services, request, response.status_code, start)
                return response
        response = await call_next(request)
        _count(services, request, response.status_code, start)
        return response

    @app.get("/health")
    async def health():
        engine = services.engine
        return {"status": "ok", "model": services.model_id, "tiny_random_model": services.tiny,
                "mllm_loaded": services.backend is not None, "queued": engine.queued, "running": len(engine.running),
                "recent_batch_sizes": list(engine.batch_sizes)[-20:],
                "batch_size_counts": dict(sorted(Counter(engine.batch_sizes).items()))}

    @app.get("/v1/models")
    async def models():
        data = [{"id": services.config.model_name, "object": "model", "created": 0, "owned_by": "mgm-omni",
                 "capabilities": ["audio.speech"], "root": services.model_id}]
        if services.backend is not None:
            data.append({"id": services.config.mllm_name, "object": "model", "created": 0, "owned_by": "mgm-omni",
                         "capabilities": ["chat.completions", "audio.transcriptions"]})
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _count(services: Services, request: Request, status: int, start: float) -> None:
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    seconds = time.perf_counter() - start
    services.metrics.requests.inc(endpoint=endpoint, status=str(status))
    services.metrics.latency.observe(seconds, endpoint=endpoint)
    client = request.client.host if request.client else "-"
    # A streamed response is logged when its headers go out: the time is the time to the first byte.
    ACCESS_LOG.info("%s %s %s %d %.2f s", client, request.method, request.url.path, status, seconds)
