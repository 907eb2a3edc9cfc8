"""The server's MLLM backend on the built-in tiny RANDOM MLLM: max_tokens, temperature and usage reach the
decoder, and a chat in the middle of its reply holds no other request (no backend-wide lock)."""

from __future__ import annotations

import threading

import pytest
import torch

from mgm_omni.engine.understanding import ChatMessage, ChatPart


@pytest.fixture(scope="module")
def backend(tiny_cache):
    from mgm_omni.engine.mllm_backend import MLLMBackend

    return MLLMBackend.load("tiny-random")


def _ask(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", [ChatPart("text", text=text)])]


def test_max_tokens_temperature_and_usage_reach_the_decoder(backend):
    from mgm_omni.generation.omni import OmniChat, OmniSettings

    deltas = list(backend.chat(_ask("Hello there"), False, max_tokens=5, temperature=0.0))
    last = deltas[-1]
    assert last.finish_reason == "length" and last.completion_tokens == 5  # random weights never stop early
    again = list(backend.chat(_ask("Hello there"), False, max_tokens=5, temperature=0.0))
    assert "".join(d.text for d in again) == "".join(d.text for d in deltas)  # greedy: the same reply
    # the same request straight through OmniChat: the prompt length is the usage's, the text the same
    from dataclasses import replace

    cfg = backend.mllm.config
    cfg = replace(cfg, max_new_tokens=5, sampling=replace(cfg.sampling, temperature=0.0))
    chat = OmniChat(backend.mllm, settings=OmniSettings(text=cfg))
    direct = chat.say("Hello there", speak=False)
    assert last.prompt_tokens == chat.last_prompt.length and direct.text == "".join(d.text for d in deltas)
    longer = list(backend.chat(_ask("Hello there"), False, max_tokens=9, temperature=0.0))
    assert longer[-1].completion_tokens == 9 and longer[-1].prompt_tokens == last.prompt_tokens


def test_a_chat_midway_holds_no_transcription(backend):
    chat = backend.chat(_ask("Tell me a long story"), False, max_tokens=50, temperature=0.0)
    assert next(chat).text is not None  # suspended in the middle of its reply, decoder state alive
    done = {}

    def transcribe():
        done["text"] = backend.transcribe(0.1 * torch.randn(16000))

    worker = threading.Thread(target=transcribe)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive() and isinstance(done.get("text"), str)  # it did not wait for the chat
        second = list(backend.chat(_ask("Hi"), False, max_tokens=3, temperature=0.0))
        assert second[-1].completion_tokens == 3
    finally:
        rest = list(chat)  # the first chat then finishes normally
    assert rest[-1].completion_tokens == 50 and rest[-1].finish_reason == "length"
