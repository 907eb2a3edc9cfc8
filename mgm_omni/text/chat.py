"""The ``qwen2vl`` chat template, the SpeechLM TTS prompt (spec §2.1) and the MLLM prompt (spec §4.6).

Prompts are plain strings with placeholder literals (``<speech>``, ``<image>``) that
``tokenize_with_placeholders`` turns into negative ids; the model code splices features in their place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import PromptError
from .rules import contains_cjk
from .token_ids import AUDIO_END, AUDIO_START, IM_END, IM_START
from .tokenizer import Tokenizer

SPEECH_PLACEHOLDER = "<speech>"
IMAGE_PLACEHOLDER = "<image>"
SPEECH_TOKEN_INDEX = -500
IMAGE_TOKEN_INDEX = -200
DEFAULT_PLACEHOLDERS: Mapping[str, int] = {
    SPEECH_PLACEHOLDER: SPEECH_TOKEN_INDEX,
    IMAGE_PLACEHOLDER: IMAGE_TOKEN_INDEX,
}
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
EN_PRE_PROMPT = "Respond with the tone of the reference audio clip."
ZH_PRE_PROMPT_CLI = "使用参考音频中听到的语气回答。"  # cli_tts, cli, web demo
ZH_PRE_PROMPT_EVAL = "使用提供的音频片段的语气回复。"  # the two TTS evaluation drivers

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """The ``qwen2vl`` conversation: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per turn.

    ``system_prompt=None`` omits the system turn.
    """

    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self):
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise PromptError(f"system_prompt must be str or None, got {type(self.system_prompt).__name__}")

    def turn(self, role: str, content: str) -> str:
        """One closed turn."""
        if role not in ROLES:
            raise PromptError(f"unknown role {role!r}; expected one of {ROLES}")
        if not isinstance(content, str):
            raise PromptError(f"{role} content must be str, got {type(content).__name__}")
        return f"{IM_START}{role}\n{content}{IM_END}\n"

    def render(
        self, messages: Sequence[tuple[str, str]], open_role: str | None = "assistant", open_prefix: str = ""
    ) -> str:
        """System turn, then each ``(role, content)`` message, then an open ``open_role`` turn that
        starts with ``open_prefix`` (``open_role=None``: the prompt ends after the last closed turn)."""
        parts = [self.turn("system", self.system_prompt)] if self.system_prompt is not None else []
        for role, content in messages:
            if role == "system":
                raise PromptError("put the system prompt in ChatTemplate.system_prompt, not in messages")
            parts.append(self.turn(role, content))
        if open_role is not None:
            if open_role not in ROLES:
                raise PromptError(f"unknown role {open_role!r}; expected one of {ROLES}")
            parts.append(f"{IM_START}{open_role}\n{open_prefix}")
        return "".join(parts)


@dataclass(frozen=True)
class TTSPromptConfig:
    """Instruction strings of the SpeechLM prompt. The Chinese one differs between the official CLI/demo
    (``ZH_PRE_PROMPT_CLI``, the default) and the evaluation drivers (``ZH_PRE_PROMPT_EVAL``)."""

    pre_prompt_en: str = EN_PRE_PROMPT
    pre_prompt_zh: str = ZH_PRE_PROMPT_CLI
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self):
        for name in ("pre_prompt_en", "pre_prompt_zh", "system_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise PromptError(f"TTSPromptConfig.{name} must be str, got {type(value).__name__}")
            _reject_placeholders(value, f"TTSPromptConfig.{name}")

    def pre_prompt(self, reference_text: str) -> str:
        """The instruction for a reference transcript: Chinese if it has a U+4E00–U+9FFF character."""
        return self.pre_prompt_zh if contains_cjk(reference_text) else self.pre_prompt_en


def _reject_placeholders(text: str, what: str) -> None:
    # A literal "<speech>" in user text would become a second placeholder and shift the speech block.
    for literal in (SPEECH_PLACEHOLDER, IMAGE_PLACEHOLDER):
        if literal in text:
            raise PromptError(f"{what} contains the placeholder literal {literal!r}")


def _tts_user_turn(reference_text: str, config: TTSPromptConfig) -> str:
    if not isinstance(reference_text, str):
        raise PromptError(f"reference transcript must be str, got {type(reference_text).__name__}")
    _reject_placeholders(reference_text, "reference transcript")
    return f"{config.pre_prompt(reference_text)}{AUDIO_START}{SPEECH_PLACEHOLDER}{AUDIO_END}\n"


def tts_prompt(reference_text: str, target_text: str, config: TTSPromptConfig | None = None) -> str:
    """The SpeechLM voice-cloning prompt of spec §2.1 (system, user with the speech block, assistant
    ``<|audio_start|>`` + target text, closed). ``reference_text`` only selects the pre-prompt here."""
    config = config or TTSPromptConfig()
    if not isinstance(target_text, str):
        raise PromptError(f"target text must be str, got {type(target_text).__name__}")
    if not target_text.strip():
        raise PromptError("target text is empty: nothing to speak")
    _reject_placeholders(target_text, "target text")
    user = _tts_user_turn(reference_text, config)
    template = ChatTemplate(config.system_prompt)
    return template.render([("user", user), ("assistant", AUDIO_START + target_text)], open_role=None)


def omni_tts_prompt(reference_text: str, config: TTSPromptConfig | None = None) -> str:
    """The omni-mode SpeechLM prompt: the TTS prompt with an empty assistant body, ending at the
    assistant ``<|audio_start|>`` (the text buffer is filled live by the MLLM, spec §2.7)."""
    config = config or TTSPromptConfig()
    user = _tts_user_turn(reference_text, config)
    return ChatTemplate(config.system_prompt).render(
        [("user", user)], open_role="assistant", open_prefix=AUDIO_START
    )


def mllm_user_content(text: str = "", image: bool = False, video: bool = False, speech: bool = False) -> str:
    """User-turn content with media placeholders, as the official CLI writes it (spec §4.6).

    Image or video: ``<|vision_start|><image><|vision_end|>\\n`` first (video uses the ``<image>``
    literal too). Speech: ``<speech>``, followed by ``\\n{text}`` when there is text. With no media the
    text is required.
    """
    if not isinstance(text, str):
        raise PromptError(f"text must be str, got {type(text).__name__}")
    _reject_placeholders(text, "user text")
    if image and video:
        raise PromptError("one visual input per conversation: give an image or a video, not both")
    parts = []
    if image or video:
        parts.append(f"{VISION_START}{IMAGE_PLACEHOLDER}{VISION_END}\n")
    if speech:
        parts.append(SPEECH_PLACEHOLDER + ("\n" if text else ""))
    if not parts and not text.strip():
        raise PromptError("empty user turn: give text or media")
    return "".join(parts) + text


def mllm_prompt(
    messages: Sequence[tuple[str, str]], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> str:
    """The MLLM generation prompt: system turn, the multi-turn history (``(role, content)``, ending with a
    user turn) and an open assistant turn. Media placeholders belong in the first user turn."""
    if not messages or messages[-1][0] != "user":
        raise PromptError("MLLM history must end with a user turn")
    return ChatTemplate(system_prompt).render(messages, open_role="assistant")


def tokenize_with_placeholders(
    text: str, tokenizer: Tokenizer, placeholders: Mapping[str, int] = DEFAULT_PLACEHOLDERS
) -> list[int]:
    """Encode ``text`` with each placeholder literal replaced by its (negative) id.

    The pieces between placeholders are encoded separately, like the official ``tokenizer_speech_token``,
    so BPE never merges across a placeholder.
    """
    if not isinstance(text, str):
        raise PromptError(f"text must be str, got {type(text).__name__}")
    if not placeholders:
        return tokenizer.encode(text)
    for literal, idx in placeholders.items():
        if not isinstance(literal, str) or not literal:
            raise PromptError(f"placeholder literal must be a non-empty str, got {literal!r}")
        if not isinstance(idx, int) or idx >= 0:
            raise PromptError(
                f"placeholder {literal!r} needs a negative id (never a vocabulary id), got {idx!r}"
            )
    # Longest first, so a literal that contains another wins.
    pattern = "|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True))
    ids: list[int] = []
    for i, piece in enumerate(re.split(f"({pattern})", text)):
        if i % 2:  # odd pieces are the captured placeholders
            ids.append(placeholders[piece])
        elif piece:
            ids.extend(tokenizer.encode(piece))
    return ids
