"""The brain's text as the mouth's ids, while the brain streams (omni mode, spec §2.7).

With the official checkpoints the MLLM (Qwen2.5) and the SpeechLM (Qwen3) share ids 0..151664, so each MLLM id
goes unchanged into the SpeechLM text column. A brain with another tokenizer (a Llama-family LLM, say) cannot
do that: its text is decoded and re-encoded with the mouth's tokenizer. To give the mouth the ids it would
get from the whole reply, text is cut only where the tokenizers' pre-tokenisers cut too: before a run of
whitespace, or after CJK punctuation that is followed by a letter. A piece therefore waits for the next word
to begin (whole words at a time); a long unbroken run (CJK text without punctuation) is released once it
reaches ``max_pending`` characters, which keeps the text right but may split a multi-character token.
"""

from __future__ import annotations

import hashlib
import json
import weakref

CJK_PUNCTUATION = frozenset("，。！？；：、…—～·「」『』（）《》〈〉【】“”‘’")
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(tokenizer) -> tuple[str, dict[str, int]]:
    """(hash of normaliser, pre-tokeniser, model type and merges; vocabulary with added tokens), cached."""
    if tokenizer not in _FINGERPRINTS:
        data = json.loads(tokenizer.backend.to_str())
        pipeline = {k: data.get(k) for k in ("normalizer", "pre_tokenizer")}
        pipeline["model"] = {k: v for k, v in data["model"].items() if k != "vocab"}
        digest = hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()
        _FINGERPRINTS[tokenizer] = (digest, tokenizer.backend.get_vocab(with_added_tokens=True))
    return _FINGERPRINTS[tokenizer]


def same_text_ids(brain, mouth) -> bool:
    """True when every brain id means the same token for the mouth and both split text alike (official pair)."""
    if brain is mouth:
        return True
    brain_hash, brain_vocab = _fingerprint(brain)
    mouth_hash, mouth_vocab = _fingerprint(mouth)
    return brain_hash == mouth_hash and all(mouth_vocab.get(tok) == idx for tok, idx in brain_vocab.items())


def _is_cut(prev: str, char: str) -> bool:
    if char.isspace():
        return not prev.isspace()
    return prev in CJK_PUNCTUATION and char.isalnum()


class TextBridge:
    """Brain ids in, mouth ids out, one brain decode step at a time.

    Args:
        mouth_tokenizer: the SpeechLM's tokenizer (``encode``); ``None`` makes the bridge the identity.
        max_pending: characters held at most while waiting for a cut.
    """

    def __init__(self, mouth_tokenizer=None, max_pending: int = 24) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.mouth, self.max_pending = mouth_tokenizer, max_pending
        self.pending = ""

    @classmethod
    def between(cls, brain_tokenizer, mouth_tokenizer) -> TextBridge:
        """The identity when the two tokenizers agree on every brain id (:func:`same_text_ids`), else re-encoding."""
        return cls(None if same_text_ids(brain_tokenizer, mouth_tokenizer) else mouth_tokenizer)

    @property
    def identity(self) -> bool:
        return self.mouth is None

    def push(self, token: int, text: str) -> list[int]:
        """One brain step (its id and the whole characters it completed) -> mouth ids ready now."""
        if self.mouth is None:
            return [int(token)]
        self.pending += text
        cut = 0
        for i in range(len(self.pending) - 1, 0, -1):
            if _is_cut(self.pending[i - 1], self.pending[i]):
                cut = i
                break
        if cut == 0 and len(self.pending) >= self.max_pending:
            cut = len(self.pending)
        if cut == 0:
            return []
        piece, self.pending = self.pending[:cut], self.pending[cut:]
        return self.mouth.encode(piece)

    def finish(self, text: str = "") -> list[int]:
        """The rest once the brain has finished (``text``: what its last step completed, e.g. at the eos)."""
        if self.mouth is None:
            return []
        piece, self.pending = self.pending + text, ""
        return self.mouth.encode(piece) if piece else []

    def reset(self) -> None:
        self.pending = ""
