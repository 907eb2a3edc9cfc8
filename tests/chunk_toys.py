"""Toy pieces of the chunk tests: a tokenizer of ten words and four marks, and its special ids."""

from __future__ import annotations

from mgm_omni.generation.speech.prompt import SpecialIds


class ToyTokenizer:
    """ids 0..9 are words, 10 is '.', 11 is '**', 12 is '\\n\\n', 13 is ' '."""

    pad_token_id, eos_token_id = 20, 21

    def decode(self, ids):
        return "".join({10: ".", 11: "**", 12: "\n\n", 13: " "}.get(i, f" w{i}") for i in ids)


TOY = SpecialIds(pad_text=20, eos_text=21, audio_start=22, audio_end=23, audio_sep=24, speech_eos=6561,
                 speech_pad=6562)
