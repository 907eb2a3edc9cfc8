"""A generator never changes the model it is given: packed and int8 decode weights live in a copy of the module
tree that shares every other tensor, and decoding through the copy gives the rows the model gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mgm_omni.config import SpeechLMConfig
from mgm_omni.config.mouth import MouthSpec
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.speech.cpu_linear import PackedLinear, packing_available
from mgm_omni.generation.speech.generator import SpeechGenerator
from mgm_omni.generation.speech.prompt import PromptRows
from mgm_omni.models.speech_lm import random_speech_lm

GREEDY = DecodeConfig(SamplingConfig(temperature=0.0), max_new_rows=40)


class ToyTokenizer:
    pad_token_id, eos_token_id = 20, 21

    def decode(self, ids):
        return "".join("." if i == 10 else f" w{i}" for i in ids)


def _model():
    cfg = SpeechLMConfig(vocab_size=50 + 2 * 40, tokenizer_text_size=50, tokenizer_speech_size=40, speech_token_count=2,
                         hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, tts_adapter_config="(1,32,4_2,48)")
    return random_speech_lm(cfg, seed=7)


def _layers(model):
    return {name: type(m) for name, m in model.named_modules()}


MOUTH = MouthSpec(speech_codes=38, slots=2, blank_codes=frozenset(), silence_code=0)  # a 38-code toy book
PROMPT = PromptRows(torch.tensor([[i % 19, 39, 39] for i in range(9)]), [1, 2, 10, 3, 4, 5, 10])


def test_packing_decodes_through_a_copy():
    model = _model()
    if not packing_available(model.lm_head.weight):
        pytest.skip("oneDNN packing is not available on this CPU")
    layers, weights = _layers(model), {k: v.clone() for k, v in model.state_dict().items()}
    packed = SpeechGenerator(model, ToyTokenizer(), GREEDY, pack=True, native=False, mouth=MOUTH)
    assert packed.packed and _layers(model) == layers  # the model is as it was ...
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    up = packed.decode_model.model.layers[0].mlp.up_proj  # ... the decode copy has the packed layers
    assert isinstance(up, PackedLinear) and up.weight is model.model.layers[0].mlp.up_proj.weight  # shared
    plain = SpeechGenerator(model, ToyTokenizer(), GREEDY, pack=False, native=False, mouth=MOUTH)
    assert plain.decode_model is model
    assert packed.decoder().generate([PROMPT])[0].rows == plain.decoder().generate([PROMPT])[0].rows


def test_int8_without_the_native_step_quantises_a_copy(tiny_cache):
    from mgm_omni.hub import resolve_mouth

    gen = SpeechGenerator.from_pretrained(resolve_mouth("tiny-random").path, quantize="int8", native=False)
    assert type(gen.model.model.layers[0].mlp.up_proj) is nn.Linear  # the loaded model keeps float layers
    assert type(gen.decode_model.model.layers[0].mlp.up_proj) is not nn.Linear  # its decode copy is int8
    assert gen.decode_model.model.embed_tokens.weight is gen.model.model.embed_tokens.weight
