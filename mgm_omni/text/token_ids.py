"""What every tokenizer of the package answers the same way over its ``tokenizers`` backend: id checks, token
lookups and the special ids the prompts use (``Tokenizer``: Qwen BPE; ``PhonemeTokenizer``: phoneme BPE)."""

from __future__ import annotations

import operator
from collections.abc import Iterable

from tokenizers import Tokenizer as _Backend

from .errors import TokenizerError

AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
AUDIO_SEP = "<|audio_sep|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"


class TokenIds:
    """Id <-> token lookups of a backend with ``_size`` ids (``backend`` and ``_size`` set by the subclass)."""

    backend: _Backend
    _size: int

    def __len__(self) -> int:
        return self._size

    def checked_ids(self, ids: Iterable[int]) -> list[int]:
        """``ids`` as ints, each in ``[0, len)``; ``TokenizerError`` otherwise (e.g. a ``-500`` placeholder)."""
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError as exc:
            raise TokenizerError(f"decode expects integer ids ({exc})") from None
        bad = next((i for i in ids if not 0 <= i < self._size), None)
        if bad is not None:
            raise TokenizerError(f"token id {bad} is out of range [0, {self._size})")
        return ids

    def token_to_id(self, token: str) -> int:
        """Id of a token string (a vocabulary entry or an added token); ``TokenizerError`` if absent."""
        idx = self.backend.token_to_id(token)
        if idx is None:
            raise TokenizerError(f"token {token!r} is not in this tokenizer")
        return idx

    def backend_token(self, idx: int) -> str:
        """The backend's token string of an id; ``TokenizerError`` when out of range."""
        idx = operator.index(idx)
        token = self.backend.id_to_token(idx) if 0 <= idx < self._size else None
        if token is None:
            raise TokenizerError(f"token id {idx} is out of range [0, {self._size})")
        return token

    @property
    def im_start_id(self) -> int:
        return self.token_to_id(IM_START)

    @property
    def audio_start_id(self) -> int:
        """``<|audio_start|>``; SpeechLM tokenizers only (``TokenizerError`` otherwise)."""
        return self.token_to_id(AUDIO_START)

    @property
    def audio_end_id(self) -> int:
        return self.token_to_id(AUDIO_END)

    @property
    def audio_sep_id(self) -> int:
        return self.token_to_id(AUDIO_SEP)
