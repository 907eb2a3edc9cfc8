"""The MGM-Omni MLLM as the server's understanding backend (transcription and text chat).

Requests run side by side: each has its own KV cache and decoder state, and the weights are only read, so a
long chat holds no other request behind it (the server bounds how many run at once,
``ServingConfig.mllm_concurrency``). Chat replies are text; the server speaks them
with its batched speech engine after the text is complete (not in lock-step with the text, as
``generation.omni.OmniChat`` can do for a single local user).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from collections.abc import Iterator

import torch

from mgm_omni.engine.understanding import ChatDelta, ChatMessage, UnderstandingBackend
from mgm_omni.generation.mllm.transcriber import Transcriber

_FINISH = {"eos": "stop", "max_tokens": "length"}


class MLLMBackend:
    """:class:`~mgm_omni.engine.understanding.UnderstandingBackend` on a :class:`~mgm_omni.generation.mllm.runner.MLLM`;
    transcripts come from its :class:`~mgm_omni.generation.mllm.transcriber.Transcriber` (``self.transcriber``)."""

    name = "mgm-omni"

    def __init__(self, mllm) -> None:
        self.mllm = mllm
        self.transcriber = Transcriber(mllm)

    @classmethod
    def load(cls, name: str, device: str = "cpu", dtype: str | None = None) -> MLLMBackend:
        from mgm_omni.hub.tiny_mouth import TINY_NAME
        from mgm_omni.generation.mllm.runner import MLLM
        from mgm_omni.hub.tiny_brain import mllm_location

        torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if name == TINY_NAME else torch.bfloat16)
        return cls(MLLM.from_pretrained(mllm_location(name), dtype=torch_dtype, device=device))

    def transcribe(self, wave16k: torch.Tensor, language: str | None = None, prompt: str | None = None) -> str:
        config = self.transcriber.config
        if prompt and prompt != config.prompt:  # a per-request instruction; same weights
            config = replace(config, prompt=prompt)
        return Transcriber(self.mllm, config).transcribe(wave16k, language)  # its own stats: requests overlap

    def chat(self, messages: list[ChatMessage], want_audio: bool, max_tokens: int | None = None,
             temperature: float | None = None) -> Iterator[ChatDelta]:
        from mgm_omni.generation.omni import OmniChat, OmniSettings, TextEvent, Turn

        system = "\n".join(m.text for m in messages if m.role == "system")
        turns = [m for m in messages if m.role != "system"]
        if not turns or turns[-1].role != "user":
            raise ValueError("messages must end with a user message")
        mllm = self.mllm
        if system:  # a per-request system prompt: a shallow copy shares the weights
            mllm = copy.copy(self.mllm)
            mllm.system_prompt = system
        text = self.mllm.config
        if max_tokens is not None:
            text = replace(text, max_new_tokens=max_tokens)
        if temperature is not None:
            text = replace(text, sampling=replace(text.sampling, temperature=temperature))
        with torch.inference_mode():
            chat = OmniChat(mllm, settings=OmniSettings(text=text))
            for m in turns[:-1]:
                chat.turns.append(chat.user_turn(**_media(m)) if m.role == "user" else Turn("assistant", m.text))
            for event in chat.ask(**_media(turns[-1]), speak=False):
                if isinstance(event, TextEvent) and event.text:
                    yield ChatDelta(event.text)
            yield ChatDelta("", _FINISH.get(chat.last.text_finish or "eos", "stop"),
                            prompt_tokens=chat.last_prompt.length, completion_tokens=len(chat.last.text_ids))


def _media(message: ChatMessage) -> dict:
    """``OmniChat.user_turn`` arguments of a message: its text and at most one audio, image and video."""
    out: dict = {"text": message.text}
    for kind in ("audio", "image", "video"):
        parts = [p for p in message.parts if p.kind == kind]
        if len(parts) > 1:
            raise ValueError(f"at most one {kind} per message")
        if parts:
            out[kind] = getattr(parts[0], kind)
    return out


def load_understanding(mllm: str | None, device: str = "cpu", dtype: str | None = None) -> UnderstandingBackend | None:
    """The MLLM backend for ``mllm`` (a directory, hub id or ``tiny-random``), or ``None`` when none is asked for."""
    if not mllm:
        return None
    return MLLMBackend.load(mllm, device=device, dtype=dtype)
