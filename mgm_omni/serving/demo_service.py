"""What the web demo's buttons do, in plain Python (no Gradio here, no model code in the UI file).

Values come in as the UI gives them (file paths, strings) and go out as the UI shows them (text,
``(sample_rate, int16 array)`` audio chunks, chat histories as lists of ``{"role", "content"}``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mgm_omni.audio import AudioError, load_audio
from mgm_omni.serving.audio_codec import to_pcm16
from mgm_omni.engine.understanding import ChatMessage, ChatPart
from mgm_omni.serving.errors import APIError
from mgm_omni.serving.services import Services
from mgm_omni.engine.voices import VoiceError

NO_MLLM = ("The MLLM is not loaded in this demo, so chat is unavailable (start `mgm-omni demo --mllm PATH`). "
           "The TTS tab works.")


class DemoService:
    """The demo's actions on shared :class:`Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def chat_available(self) -> bool:
        return self.services.backend is not None

    def voice_names(self) -> list[str]:
        return self.services.voices.names()

    def voice_table(self) -> list[list[str]]:
        """Rows (name, kind, transcript/description) for the preset gallery."""
        rows = []
        for v in self.services.voices.list():
            rows.append([v.name, "preset" if v.preset else "uploaded", v.description or v.text])
        return rows

    def add_voice(self, name: str, path: str | None, text: str) -> str:
        """Register a clip (upload or microphone recording) as a voice; returns a status line."""
        if not path:
            return "Choose or record a reference clip first."
        try:
            data = Path(path).read_bytes()
            if len(data) > self.services.config.max_upload_bytes:
                return f"The clip is over the {self.services.config.max_upload_bytes} byte limit."
            voice = self.services.voices.add((name or "").strip(), data, text,
                                             self.services.config.max_voice_seconds)
        except (VoiceError, OSError) as exc:
            return f"Could not add the voice: {exc}"
        return f"Added voice '{voice.name}' ({voice.seconds:.1f} s, {voice.n_tokens} prompt tokens)."

    def speak(self, text: str, voice_name: str) -> Iterator[tuple[int, np.ndarray]]:
        """Stream ``text`` in a voice as ``(sample_rate, int16 chunk)``; raises ``ValueError`` with a message."""
        try:
            voice = self.services.voices.get(voice_name or "default")
            job = self.services.speak(text or "", voice)
        except (VoiceError, APIError) as exc:
            raise ValueError(str(exc)) from None
        try:
            for chunk in job.chunks(timeout=600):
                yield self.services.sample_rate, to_pcm16(chunk)
        finally:
            job.cancel()  # the page went away or the user pressed stop: free the slot

    def user_message(self, text: str, mic: str | None, image: str | None, video: str | None,
                     audio: str | None) -> ChatMessage:
        """The user's turn from the chat inputs (media decoded in a bounded way)."""
        parts = [ChatPart("text", text=text)] if text else []
        limit = self.services.config.max_audio_seconds
        for path in (mic, audio):
            if path:
                try:
                    wave, _ = load_audio(path, sample_rate=16000, max_seconds=limit)
                except AudioError as exc:
                    raise ValueError(str(exc)) from None
                parts.append(ChatPart("audio", audio=wave))
        if image:
            from PIL import Image

            with Image.open(image) as img:
                parts.append(ChatPart("image", image=img.convert("RGB")))
        if video:
            parts.append(ChatPart("video", video=Path(video).read_bytes()))
        if not parts:
            raise ValueError("Type a message or attach audio, an image or a video.")
        return ChatMessage("user", parts)

    def chat(self, history: list[ChatMessage], message: ChatMessage, voice_name: str,
             speak: bool) -> Iterator[tuple[str, tuple[int, np.ndarray] | None]]:
        """Stream the reply: ``(text so far, None)`` while text arrives, then ``(text, audio chunk)``."""
        if self.services.backend is None:
            yield NO_MLLM, None
            return
        text = ""
        for delta in self.services.backend.chat([*history, message], speak):
            text += delta.text
            yield text, None
        if speak and text.strip():
            for chunk in self.speak(text, voice_name):
                yield text, chunk
