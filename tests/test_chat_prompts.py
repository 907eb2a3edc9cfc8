"""Chat prompts: the TTS prompt (pre-prompt choice, eval/CLI variants, omni prefix), the qwen2vl MLLM
prompt over several turns with media placeholders, and bad prompt input."""

from __future__ import annotations

import pytest

from mgm_omni.text import (
    ZH_PRE_PROMPT_CLI,
    ZH_PRE_PROMPT_EVAL,
    ChatTemplate,
    PromptError,
    TTSPromptConfig,
    mllm_prompt,
    mllm_user_content,
    omni_tts_prompt,
    tts_prompt,
)



def test_tts_prompt_pre_prompt_choice_and_variants():
    base = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    tail = (
        "<|audio_start|><speech><|audio_end|>\n<|im_end|>\n"
        "<|im_start|>assistant\n<|audio_start|>Hi.<|im_end|>\n"
    )
    assert (
        tts_prompt("Hello there.", "Hi.")
        == base + "Respond with the tone of the reference audio clip." + tail
    )
    assert tts_prompt("你好。", "Hi.") == base + ZH_PRE_PROMPT_CLI + tail
    # Only the reference transcript decides, not the target; kana alone is not "CJK" per the spec.
    assert ZH_PRE_PROMPT_CLI not in tts_prompt("Hello", "你好")
    assert ZH_PRE_PROMPT_CLI not in tts_prompt("こんにちは", "Hi.")
    evals = TTSPromptConfig(pre_prompt_zh=ZH_PRE_PROMPT_EVAL)
    assert tts_prompt("你好。", "Hi.", evals) == base + "使用提供的音频片段的语气回复。" + tail
    omni = omni_tts_prompt("Hello there.")
    assert omni.endswith("<|im_end|>\n<|im_start|>assistant\n<|audio_start|>")
    assert tts_prompt("Hello there.", "Hi.").startswith(omni)


def test_mllm_prompt_multi_turn_with_media():
    first = mllm_user_content("What is shown?", image=True)
    assert first == "<|vision_start|><image><|vision_end|>\nWhat is shown?"
    assert mllm_user_content("Summarise.", speech=True) == "<speech>\nSummarise."
    assert mllm_user_content(speech=True) == "<speech>"
    assert mllm_user_content(video=True, speech=True) == "<|vision_start|><image><|vision_end|>\n<speech>"
    history = [("user", first), ("assistant", "A cat."), ("user", "What colour?")]
    assert mllm_prompt(history) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><image><|vision_end|>\nWhat is shown?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nWhat colour?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        mllm_prompt([("user", "hi")], system_prompt=None)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_prompt_bad_input():
    with pytest.raises(PromptError, match="empty"):
        tts_prompt("Hello.", "   ")
    with pytest.raises(PromptError, match="placeholder"):
        tts_prompt("Hello.", "say <speech> now")
    with pytest.raises(PromptError, match="placeholder"):
        omni_tts_prompt("a <image> b")
    with pytest.raises(PromptError, match="must be str"):
        tts_prompt(None, "hi")
    with pytest.raises(PromptError, match="not both"):
        mllm_user_content("x", image=True, video=True)
    with pytest.raises(PromptError, match="empty user turn"):
        mllm_user_content("")
    with pytest.raises(PromptError, match="end with a user turn"):
        mllm_prompt([("user", "q"), ("assistant", "a")])
    with pytest.raises(PromptError, match="unknown role"):
        ChatTemplate().render([("robot", "x")])
    with pytest.raises(PromptError, match="system prompt"):
        ChatTemplate().render([("system", "x")])
    with pytest.raises(PromptError, match="pre_prompt_zh"):
        TTSPromptConfig(pre_prompt_zh=None)
