"""``/v1/audio/speech`` (whole, chunked or SSE) and the voice registry routes."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mgm_omni.serving.audio_codec import (
    MEDIA_TYPES,
    CodecError,
    StreamEncoder,
    available_formats,
    check_format,
    encode_audio,
)
from mgm_omni.serving.errors import APIError, invalid
from mgm_omni.serving.http_input import parse_json
from mgm_omni.engine.jobs import SpeechJob
from mgm_omni.serving.schemas import SpeechBody
from mgm_omni.serving.services import Services
from mgm_omni.serving.voice_names import check_new_name, resolve
from mgm_omni.engine.voices import Voice, VoiceError

router = APIRouter()


def voice_error(exc: VoiceError, param: str = "voice") -> APIError:
    kind = {401: "authentication_error", 403: "permission_error", 503: "server_error"}.get(exc.status,
                                                                                          "invalid_request_error")
    return APIError(exc.status, str(exc), kind, exc.code, param)


def get_voice(services: Services, name: str, param: str = "voice") -> Voice:
    """The voice a request names: exact, else ignoring case, else an OpenAI voice name's preset."""
    try:
        return services.voices.get(resolve(services.voices, name))
    except VoiceError as exc:
        err = voice_error(exc, param)
        if exc.status == 404:  # an unknown voice in a request body is a bad request, as OpenAI reports it
            err.status = 400
        raise err from None


def watch_disconnect(request: Request, job: SpeechJob) -> asyncio.Task:
    """A task that cancels ``job`` as soon as the client disconnects (the body has been read already)."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.cancel()
                return

    return asyncio.create_task(watch())


async def wait_audio(job: SpeechJob, request: Request) -> np.ndarray:
    """All of a job's audio; the job is cancelled if the client disconnects while it waits."""
    watcher = watch_disconnect(request, job)
    try:
        parts = [chunk async for chunk in job.achunks()]
    finally:
        watcher.cancel()
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _record(services: Services, job: SpeechJob) -> None:
    if job.stats.finish_reason == "cancelled" or not job.done:
        services.metrics.cancelled.inc()
    else:
        services.metrics.observe_job(job.stats, services.sample_rate)


@router.post("/v1/audio/speech")
async def create_speech(request: Request):
    services: Services = request.app.state.services
    body: SpeechBody = await parse_json(request, SpeechBody)
    if body.speed != 1.0:
        raise invalid("speed: only 1.0 is supported (the model has no speaking-rate control)", "speed",
                      "unsupported_value")
    if body.instructions:
        raise invalid("instructions are not supported by this model; clone a voice instead", "instructions",
                      "unsupported_value")
    fmt = body.response_format or ("mp3" if "mp3" in available_formats() else "wav")
    streaming = body.stream or body.stream_format == "sse"
    try:
        check_format(fmt, stream=streaming)
    except CodecError as exc:
        raise invalid(str(exc), "response_format", "unsupported_format") from None
    voice = get_voice(services, body.voice)
    job = services.speak(body.input, voice, loop=asyncio.get_running_loop())
    headers = {"X-Request-Id": job.id}
    if not streaming:
        try:
            audio = await wait_audio(job, request)
        finally:
            _record(services, job)
        data = await asyncio.to_thread(encode_audio, audio, services.sample_rate, fmt)  # mp3 of minutes: off the loop
        return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)
    encoder = StreamEncoder(fmt, services.sample_rate)
    watcher = watch_disconnect(request, job)
    if body.stream_format == "sse":
        return StreamingResponse(_sse(services, job, encoder, watcher), media_type="text/event-stream",
                                 headers=headers)
    return StreamingResponse(_chunked(services, job, encoder, watcher), media_type=encoder.media_type,
                             headers=headers)


async def _chunked(services: Services, job: SpeechJob, encoder: StreamEncoder, watcher: asyncio.Task):
    try:
        head = encoder.start()
        if head:
            yield head
        async for chunk in job.achunks():
            data = encoder.encode(chunk)
            if data:
                yield data
        tail = encoder.finish()
        if tail:
            yield tail
    finally:
        watcher.cancel()
        job.cancel()
        _record(services, job)


async def _sse(services: Services, job: SpeechJob, encoder: StreamEncoder, watcher: asyncio.Task):
    try:
        head = encoder.start()
        async for chunk in job.achunks():
            data = head + encoder.encode(chunk)
            head = b""
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
        tail = encoder.finish()
        if tail:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
        s = job.stats
        yield _event({"type": "speech.audio.done", "usage": {"input_tokens": len(job.prompt.buffer),
                      "output_tokens": s.tokens, "total_tokens": len(job.prompt.buffer) + s.tokens},
                      "audio_seconds": s.samples / services.sample_rate, "finish_reason": s.finish_reason})
    finally:
        watcher.cancel()
        job.cancel()
        _record(services, job)


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


# ------------------------------------------------------------------------------------------------ voices


@router.get("/v1/audio/voices")
async def list_voices(request: Request):
    services: Services = request.app.state.services
    try:
        voices = await asyncio.to_thread(services.voices.list)
    except VoiceError as exc:
        raise voice_error(exc) from None
    return {"object": "list", "data": [v.info() for v in voices]}


@router.post("/v1/audio/voices")
async def create_voice(request: Request):
    services: Services = request.app.state.services
    form = await request.form(max_files=1, max_fields=8)
    name, text, upload = form.get("name"), form.get("text") or form.get("transcript"), form.get("file")
    if not isinstance(name, str) or not name:
        raise invalid("name: a voice name is required", "name", "missing_field")
    if upload is None or isinstance(upload, str):
        raise invalid("file: a reference audio file is required", "file", "missing_field")
    if text is not None and not isinstance(text, str):
        raise invalid("text must be a string", "text")
    data = await upload.read()
    try:
        check_new_name(services.voices, name)  # names ignore case: "Alice" is taken once "alice" exists
        voice = await asyncio.to_thread(services.voices.add, name, data, text, services.config.max_voice_seconds)
    except VoiceError as exc:
        err = voice_error(exc, "file" if exc.code == "invalid_audio" else "name")
        if "max_seconds" in err.message:
            err.code = "audio_too_long"
        raise err from None
    return JSONResponse(voice.info(), status_code=201)


@router.delete("/v1/audio/voices/{name}")
async def delete_voice(name: str, request: Request):
    services: Services = request.app.state.services
    try:
        name = resolve(services.voices, name, aliases=False)
        await asyncio.to_thread(services.voices.remove, name)
    except VoiceError as exc:
        raise voice_error(exc, "name") from None
    return {"object": "voice.deleted", "name": name, "deleted": True, "time": int(time.time())}
