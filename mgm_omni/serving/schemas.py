"""Request bodies of the OpenAI-compatible API (pydantic), as OpenAI documents them plus ``stream``.

Only fields the server honours are accepted on the speech endpoint (a typo is a 400, not silently
ignored); chat accepts and ignores the many optional OpenAI fields clients send by default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SpeechFormat = Literal["wav", "pcm", "flac", "mp3", "opus", "aac"]
ChatAudioFormat = Literal["wav", "pcm16", "flac", "mp3", "opus", "aac"]


def _voice_name(value):
    # OpenAI accepts a name or {"id": name} (custom voices).
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return value


class SpeechBody(BaseModel):
    """``POST /v1/audio/speech``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input: str = Field(min_length=1)
    voice: str = "default"
    response_format: SpeechFormat | None = None  # None: mp3 if this FFmpeg can encode it, else wav
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    stream: bool = False  # chunked transfer of audio as it is generated
    stream_format: Literal["audio", "sse"] | None = None  # "sse": base64 chunks as server-sent events

    _voice = field_validator("voice", mode="before")(_voice_name)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    data: str  # base64
    format: str = "wav"


class AudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class VideoURL(BaseModel):
    url: str


class VideoPart(BaseModel):
    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | ImagePart | AudioPart | VideoPart, Field(discriminator="type")]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatAudio(BaseModel):
    voice: str = "default"
    format: ChatAudioFormat = "wav"

    _voice = field_validator("voice", mode="before")(_voice_name)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatBody(BaseModel):
    """``POST /v1/chat/completions`` with text, image, audio and video inputs and optional audio output."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[MessageIn] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] = Field(default_factory=lambda: ["text"])
    audio: ChatAudio | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def wants_audio(self) -> bool:
        return "audio" in self.modalities


TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
