"""``/v1/audio/transcriptions`` and ``/v1/chat/completions``: parse media, call the MLLM backend, and (for
``modalities: ["text", "audio"]``) speak the reply with the speech engine, streamed as SSE if asked."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask

from mgm_omni.serving.audio_codec import encode_audio, to_pcm16
from mgm_omni.engine.understanding import ChatDelta, ChatMessage, ChatPart
from mgm_omni.serving.errors import invalid, model_not_loaded
from mgm_omni.serving.http_input import data_url_bytes, decode_audio, decode_base64, decode_image, parse_json
from mgm_omni.serving.schemas import (
    TRANSCRIPTION_FORMATS,
    AudioPart,
    ChatBody,
    ImagePart,
    TextPart,
    VideoPart,
)
from mgm_omni.serving.services import Services
from mgm_omni.serving.speech_api import get_voice, wait_audio

router = APIRouter()
_CHAT_FORMATS = {"pcm16": "pcm"}


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request):
    services: Services = request.app.state.services
    form = await request.form(max_files=1, max_fields=16)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise invalid("file: an audio file is required (multipart/form-data field 'file')", "file", "missing_field")
    fmt = form.get("response_format") or "json"
    if fmt not in TRANSCRIPTION_FORMATS:
        raise invalid(f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}, got {fmt!r}",
                      "response_format", "unsupported_format")
    if form.get("stream") in ("true", "True", "1"):
        raise invalid("stream: streamed transcription is not supported", "stream", "unsupported_value")
    if services.backend is None:
        raise model_not_loaded("The MLLM that transcribes audio")
    data = await upload.read()
    wave = await asyncio.to_thread(decode_audio, data, services.config.max_audio_seconds, "file")
    language, prompt = form.get("language") or None, form.get("prompt") or None
    async with request.app.state.mllm_slots:  # a few requests at a time; none waits for another's end
        try:
            text = await asyncio.to_thread(services.backend.transcribe, wave, language, prompt)
        except ValueError as exc:
            raise invalid(f"the MLLM cannot take this input: {exc}", code="invalid_input") from None
    if fmt == "text":
        return PlainTextResponse(text)
    if fmt == "verbose_json":
        seconds = wave.shape[0] / 16000
        return {"task": "transcribe", "language": language or "unknown", "duration": seconds, "text": text,
                "segments": [{"id": 0, "start": 0.0, "end": seconds, "text": text}]}
    return {"text": text}


def parse_messages(body: ChatBody, max_audio_seconds: float) -> list[ChatMessage]:
    """Request messages -> backend messages with decoded media (bounded)."""
    out = []
    for i, msg in enumerate(body.messages):
        parts: list[ChatPart] = []
        content = msg.content if isinstance(msg.content, list) else [TextPart(type="text", text=msg.content or "")]
        for j, part in enumerate(content):
            where = f"messages.{i}.content.{j}"
            if isinstance(part, TextPart):
                parts.append(ChatPart("text", text=part.text))
            elif isinstance(part, ImagePart):
                parts.append(ChatPart("image", image=decode_image(data_url_bytes(part.image_url.url, where), where)))
            elif isinstance(part, AudioPart):
                raw = decode_base64(part.input_audio.data, where)
                parts.append(ChatPart("audio", audio=decode_audio(raw, max_audio_seconds, where)))
            elif isinstance(part, VideoPart):
                parts.append(ChatPart("video", video=data_url_bytes(part.video_url.url, where)))
        out.append(ChatMessage("system" if msg.role == "developer" else msg.role, parts))
    return out


class _Slot:
    """One of the MLLM's concurrent slots, released exactly once (by the stream's end or the response's)."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self.slots, self.held = slots, False

    async def acquire(self) -> _Slot:
        await self.slots.acquire()
        self.held = True
        return self

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()


def reply_limits(body: ChatBody, limit: int) -> tuple[int | None, float | None]:
    """The request's reply cap (``max_completion_tokens``, else the older ``max_tokens``) and temperature."""
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > limit:
        name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise invalid(f"{name} is {max_tokens}; this server allows at most {limit} tokens per reply", name)
    return max_tokens, body.temperature


def usage(last: ChatDelta) -> dict | None:
    """OpenAI's ``usage`` from the backend's final counts (``None`` when it reports none)."""
    if last.prompt_tokens is None or last.completion_tokens is None:
        return None
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens}


@router.post("/v1/chat/completions")
async def create_chat(request: Request):
    services: Services = request.app.state.services
    body: ChatBody = await parse_json(request, ChatBody)
    max_tokens, temperature = reply_limits(body, services.config.max_chat_tokens)
    voice = None
    if body.wants_audio:
        if body.audio is None:
            raise invalid('audio: {"voice", "format"} is required when modalities include "audio"', "audio")
        if body.stream and body.audio.format != "pcm16":
            raise invalid("audio.format must be pcm16 when streaming", "audio.format", "unsupported_format")
        voice = get_voice(services, body.audio.voice, "audio.voice")
    if services.backend is None:
        raise model_not_loaded("The MLLM that answers chat")
    messages = await asyncio.to_thread(parse_messages, body, services.config.max_audio_seconds)
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": body.model or services.config.mllm_name}
    slot = await _Slot(request.app.state.mllm_slots).acquire()
    streaming = False  # once a stream response owns the slot, it releases it
    try:
        deltas = _backend_deltas(services, messages, body.wants_audio, max_tokens, temperature)
        try:  # the first piece comes before any response, so bad input is still a clean 400
            first = await deltas.__anext__()
        except StopAsyncIteration:
            first = ChatDelta("", "stop")
        deltas = _prepend(first, deltas)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            streaming = True
            return StreamingResponse(_chat_sse(services, deltas, voice, meta, slot, include_usage),
                                     media_type="text/event-stream", background=BackgroundTask(slot.release))
        text, last = "", ChatDelta("", "stop")
        async for delta in deltas:
            text += delta.text
            last = delta if delta.finish_reason else last
    finally:
        if not streaming:
            slot.release()
    message: dict = {"role": "assistant", "content": text}
    if voice is not None:
        job = services.speak(text, voice, loop=asyncio.get_running_loop())
        audio = await wait_audio(job, request)
        services.metrics.observe_job(job.stats, services.sample_rate)
        fmt = _CHAT_FORMATS.get(body.audio.format, body.audio.format)
        message = {"role": "assistant", "content": None, "audio": {
            "id": f"audio_{job.id}", "expires_at": meta["created"] + 3600, "transcript": text,
            "data": base64.b64encode(encode_audio(audio, services.sample_rate, fmt)).decode()}}
    reply = {**meta, "object": "chat.completion",
             "choices": [{"index": 0, "message": message, "finish_reason": last.finish_reason}]}
    counts = usage(last)
    if counts is not None:
        reply["usage"] = counts
    return JSONResponse(reply)


async def _backend_deltas(services: Services, messages: list[ChatMessage], want_audio: bool,
                          max_tokens: int | None, temperature: float | None):
    """The backend's (blocking) reply iterator, driven from a thread, as an async iterator."""
    it = services.backend.chat(messages, want_audio, max_tokens=max_tokens, temperature=temperature)
    done = object()
    try:
        while True:
            try:
                delta = await asyncio.to_thread(next, it, done)
            except ValueError as exc:  # the MLLM refused the input (e.g. two images in one message)
                raise invalid(f"the MLLM cannot take this input: {exc}", code="invalid_input") from None
            if delta is done:
                return
            yield delta
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            try:
                close()  # a reply abandoned midway (client gone) frees its decoder state now
            except ValueError:  # still running in its thread (cancelled mid-step): it ends with the thread
                pass


async def _prepend(first: ChatDelta, rest):
    yield first
    async for delta in rest:
        yield delta


async def _chat_sse(services: Services, deltas, voice, meta: dict, slot: _Slot, include_usage: bool):
    def chunk(delta: dict, finish: str | None = None) -> str:
        payload = {**meta, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    text, last = "", ChatDelta("", "stop")
    try:
        async for d in deltas:
            d: ChatDelta
            last = d if d.finish_reason else last
            if d.text:
                text += d.text
                yield chunk({"audio": {"transcript": d.text}} if voice is not None else {"content": d.text})
    finally:
        slot.release()  # the text is done: the MLLM serves the next request while this one speaks
    finish = last.finish_reason
    if voice is not None and text.strip():
        job = services.speak(text, voice, loop=asyncio.get_running_loop())
        audio_id = f"audio_{job.id}"
        try:
            async for samples in job.achunks():
                data = base64.b64encode(to_pcm16(samples).tobytes()).decode()
                yield chunk({"audio": {"id": audio_id, "data": data}})
        finally:
            services.metrics.observe_job(job.stats, services.sample_rate)
        yield chunk({"audio": {"id": audio_id, "expires_at": meta["created"] + 3600}})
    yield chunk({}, finish)
    counts = usage(last)
    if include_usage and counts is not None:  # OpenAI: one last chunk with no choices, only the usage
        yield f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': [], 'usage': counts})}\n\n"
    yield "data: [DONE]\n\n"

