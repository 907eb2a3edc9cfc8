"""Text front-end: the Qwen tokenizer, the ``qwen2vl`` chat prompts, and the text rules of decoding.

- ``tokenizer``: ``Tokenizer`` (``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` + added tokens).
- ``frontend``: ``TextFrontEnd``, what a SpeechLM's text side needs (``BPEFrontEnd``: a tokenizer, optional g2p).
- ``chat``: ``ChatTemplate``, the SpeechLM TTS / omni prompts, the MLLM prompt, placeholder tokenisation.
- ``rules``: sentence ends, skippable tokens, CJK tests, reference-transcript tidying.
"""

from .chat import (
    DEFAULT_PLACEHOLDERS,
    DEFAULT_SYSTEM_PROMPT,
    EN_PRE_PROMPT,
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_INDEX,
    SPEECH_PLACEHOLDER,
    SPEECH_TOKEN_INDEX,
    ZH_PRE_PROMPT_CLI,
    ZH_PRE_PROMPT_EVAL,
    ChatTemplate,
    TTSPromptConfig,
    mllm_prompt,
    mllm_user_content,
    omni_tts_prompt,
    tokenize_with_placeholders,
    tts_prompt,
)
from .errors import PromptError, TextError, TokenizerError
from .frontend import BPEFrontEnd, TextFrontEnd, as_frontend, load_text_frontend
from .rules import (
    contains_cjk,
    finish_reference_transcript,
    is_cjk_char,
    is_sentence_end,
    is_skippable,
    load_t2s_converter,
)
from .token_ids import AUDIO_END, AUDIO_SEP, AUDIO_START, ENDOFTEXT, IM_END, IM_START
from .tokenizer import Tokenizer

__all__ = [
    "BPEFrontEnd",
    "TextFrontEnd",
    "as_frontend",
    "load_text_frontend",
    "AUDIO_END",
    "AUDIO_SEP",
    "AUDIO_START",
    "DEFAULT_PLACEHOLDERS",
    "DEFAULT_SYSTEM_PROMPT",
    "EN_PRE_PROMPT",
    "ENDOFTEXT",
    "IMAGE_PLACEHOLDER",
    "IMAGE_TOKEN_INDEX",
    "IM_END",
    "IM_START",
    "SPEECH_PLACEHOLDER",
    "SPEECH_TOKEN_INDEX",
    "ZH_PRE_PROMPT_CLI",
    "ZH_PRE_PROMPT_EVAL",
    "ChatTemplate",
    "PromptError",
    "TTSPromptConfig",
    "TextError",
    "Tokenizer",
    "TokenizerError",
    "contains_cjk",
    "finish_reference_transcript",
    "is_cjk_char",
    "is_sentence_end",
    "is_skippable",
    "load_t2s_converter",
    "mllm_prompt",
    "mllm_user_content",
    "omni_tts_prompt",
    "tokenize_with_placeholders",
    "tts_prompt",
]
