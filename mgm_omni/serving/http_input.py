"""Reading request input safely: a body-size cap enforced while bytes arrive, JSON into pydantic models
with OpenAI-style 400s, bounded audio decoding, and ``data:`` URLs (the server never fetches a URL)."""

from __future__ import annotations

import base64
import binascii
import io
import json

import torch
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from mgm_omni.audio import AudioError, load_audio
from mgm_omni.serving.errors import APIError, invalid, too_large

MAX_IMAGE_PIXELS = 4096 * 4096


class BodyLimitMiddleware:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, from Content-Length or while reading.

    A declared length over the limit is refused before reading anything; an undeclared (chunked) body is
    counted as it arrives and the read fails with an :class:`APIError` (413) once it passes the limit.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, self._error(int(declared)))
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._error(seen)
            return message

        await self.app(scope, limited_receive, send)

    def _error(self, size: int) -> APIError:
        return too_large(f"the request body is over the {self.limit} byte limit (got {size} bytes or more)",
                         code="request_too_large")


async def _send_error(send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def parse_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request's JSON body as ``model``; malformed JSON or invalid fields give a 400 APIError."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ()))
        raise invalid(f"{param or 'body'}: {first.get('msg', 'invalid value')}", param=param or None,
                      code="invalid_request") from None


def decode_audio(data: bytes, max_seconds: float, what: str = "file", sample_rate: int = 16000) -> torch.Tensor:
    """Mono float32 (S,) at ``sample_rate`` from an uploaded file's bytes; refuses audio over ``max_seconds``."""
    try:
        wave, _ = load_audio(data, sample_rate=sample_rate, max_seconds=max_seconds)
    except AudioError as exc:
        code = "audio_too_long" if "max_seconds" in str(exc) else "invalid_audio"
        raise invalid(f"{what}: {exc}", param=what, code=code) from None
    return wave


def decode_base64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{what} is not valid base64", param=what, code="invalid_base64") from None


def data_url_bytes(url: str, what: str) -> bytes:
    """The payload of a ``data:<mime>;base64,<data>`` URL. Remote URLs are refused (no server-side fetch)."""
    if not url.startswith("data:"):
        raise invalid(f"{what}: only data: URLs are accepted (the server does not fetch remote URLs)", param=what,
                      code="unsupported_url")
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise invalid(f"{what}: expected data:<type>;base64,<data>", param=what, code="invalid_data_url")
    return decode_base64(payload, what)


def decode_image(data: bytes, what: str):
    """A PIL RGB image, refusing decompression bombs (more than ``MAX_IMAGE_PIXELS`` pixels)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise invalid(f"{what}: image of {img.width}x{img.height} pixels is over the limit", param=what,
                              code="image_too_large")
            return img.convert("RGB")
    except APIError:
        raise
    except Exception as exc:
        raise invalid(f"{what}: not a readable image ({type(exc).__name__})", param=what,
                      code="invalid_image") from None
