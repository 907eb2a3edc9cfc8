"""The understanding side of the server (transcription and chat), behind a small interface.

The HTTP layer parses requests into :class:`ChatMessage` lists and 16 kHz waveforms and calls an
:class:`UnderstandingBackend`; the MLLM (MGM-Omni's "brain") implements it. Without an MLLM loaded,
the server has no backend and those endpoints answer 503 ``model_not_loaded``: transcripts and chat
replies are never invented. Chat audio is not the backend's job: the server speaks the reply text
with its speech engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class ChatPart:
    """One content part: ``kind`` is text, image (a PIL image), audio (16 kHz (S,) float32) or video (bytes)."""

    kind: str
    text: str | None = None
    image: object | None = None
    audio: torch.Tensor | None = None
    video: bytes | None = None


@dataclass
class ChatMessage:
    role: str
    parts: list[ChatPart] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text or "" for p in self.parts if p.kind == "text")


@dataclass
class ChatDelta:
    """A piece of the reply text; the last one has ``finish_reason`` ("stop" or "length") and the token counts
    (``prompt_tokens``: the whole prompt, media included; ``completion_tokens``: the reply's)."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class UnderstandingBackend(Protocol):
    """What the server needs from the MLLM."""

    name: str

    def transcribe(self, wave16k: torch.Tensor, language: str | None = None, prompt: str | None = None) -> str:
        """The transcript of a mono 16 kHz waveform (S,)."""

    def chat(self, messages: list[ChatMessage], want_audio: bool, max_tokens: int | None = None,
             temperature: float | None = None) -> Iterator[ChatDelta]:
        """Stream the assistant's reply to ``messages``; ``want_audio`` asks for a speakable reply. ``max_tokens``
        caps the reply, ``temperature`` its sampling (``None``: the model's own settings)."""
