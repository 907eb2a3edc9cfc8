"""The text front-end of a mouth: text -> the ids of the SpeechLM's text column, and what single ids mean.

The chunk schedule needs, per text id, whether it ends a sentence and whether it is skippable at a chunk
start; prompt building needs to encode user text (``encode``) and the chat markup around it (``tokenize``).
A front-end bundles both so the decoder never assumes one tokenizer:

* the official checkpoints read the Qwen BPE (:class:`BPEFrontEnd` on the checkpoint's tokenizer);
* an own model reads its own tokenizer, optionally after a grapheme-to-phoneme step (``g2p``: a function
  from text to the phoneme string its tokenizer was trained on; markup is never passed through it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from .errors import TokenizerError
from .rules import is_sentence_end, is_skippable
from .tokenizer import Tokenizer

G2P = Callable[[str], str]


class TextFrontEnd(Protocol):
    """What the SpeechLM's text side needs: the ``Tokenizer`` surface plus per-id rules."""

    pad_token_id: int  # text column while speech catches up
    eos_token_id: int  # the END row

    def __len__(self) -> int: ...

    def prepare(self, text: str) -> str:
        """User text as the tokenizer reads it (the g2p output; unchanged for a BPE front-end)."""

    def encode(self, text: str) -> list[int]:
        """Ids of user text (``prepare`` then the tokenizer)."""

    def tokenize(self, markup: str) -> list[int]:
        """Ids of already prepared text or chat markup (the tokenizer alone)."""

    def decode(self, ids: Iterable[int]) -> str: ...

    def is_sentence_end(self, token: int) -> bool: ...

    def is_skippable(self, token: int) -> bool: ...


class BPEFrontEnd:
    """A tokenizer (the Qwen BPE, or a model's own) with an optional g2p step and cached per-id rules.

    Args:
        tokenizer: anything with ``encode``, ``decode``, ``pad_token_id``, ``eos_token_id`` and ``len``.
        g2p: text -> phoneme string, applied to user text only; None for the Qwen BPE.
    """

    def __init__(self, tokenizer, g2p: G2P | None = None) -> None:
        self.tokenizer, self.g2p = tokenizer, g2p
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.eos_token_id = int(tokenizer.eos_token_id)
        self._rules: dict[int, tuple[bool, bool]] = {}

    @classmethod
    def from_dir(cls, path: str | os.PathLike, g2p: G2P | None = None) -> BPEFrontEnd:
        return cls(Tokenizer.from_dir(path), g2p)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __repr__(self) -> str:
        return f"BPEFrontEnd({self.tokenizer!r}, g2p={getattr(self.g2p, '__name__', self.g2p)})"

    def prepare(self, text: str) -> str:
        return text if self.g2p is None else self.g2p(text)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(self.prepare(text))

    def tokenize(self, markup: str) -> list[int]:
        return self.tokenizer.encode(markup)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(ids)

    def _flags(self, token: int) -> tuple[bool, bool]:
        flags = self._rules.get(token)
        if flags is None:
            text = self.tokenizer.decode([token])
            flags = self._rules[token] = (is_sentence_end(text), is_skippable(text))
        return flags

    def is_sentence_end(self, token: int) -> bool:
        """Spec §2.2: the decoded id starts with ``. ? ! ;`` (or CJK forms, a newline) or ends with a newline."""
        return self._flags(token)[0]

    def is_skippable(self, token: int) -> bool:
        """Spec §2.2: the decoded id is only spaces, newlines, ``*`` or ``#``."""
        return self._flags(token)[1]


def as_frontend(tokenizer_or_frontend) -> TextFrontEnd:
    """A front-end as is; a bare tokenizer wrapped as a :class:`BPEFrontEnd` without g2p."""
    if hasattr(tokenizer_or_frontend, "is_sentence_end") and hasattr(tokenizer_or_frontend, "tokenize"):
        return tokenizer_or_frontend
    return BPEFrontEnd(tokenizer_or_frontend)


PHONEMES_FILE = "phonemes.json"  # the phoneme front-end's G2P settings (text/phoneme_tokenizer.py)
# Grapheme-to-phoneme steps a mouth may name in ``mouth.json`` (``g2p``) for a plain BPE tokenizer.
G2P_STEPS: dict[str, Callable[[], G2P]] = {}


def load_text_frontend(model_dir: str | os.PathLike, kind: str = "qwen-bpe", tokenizer_dir: str = ".",
                       g2p: str | None = None) -> TextFrontEnd:
    """The front-end a mouth declares (``MouthSpec.text_frontend``, ``tokenizer_dir``, ``g2p``).

    ``own-bpe`` with a ``phonemes.json`` in the tokenizer folder is the phoneme front-end
    (:class:`~mgm_omni.text.phoneme_tokenizer.PhonemeTokenizer`, its G2P recorded there; ``g2p`` may then only
    say ``"phonemes"``); otherwise a tokenizer directory read as a :class:`BPEFrontEnd`, after the named
    ``g2p`` step if any.

    Raises:
        TokenizerError: an unknown kind, a g2p step that is not available, a missing tokenizer.
    """
    if kind not in ("qwen-bpe", "own-bpe"):
        raise TokenizerError(f"unknown text front-end {kind!r} (known: 'qwen-bpe', 'own-bpe')")
    folder = Path(model_dir) / tokenizer_dir
    if kind == "own-bpe" and (folder / PHONEMES_FILE).is_file():
        from .phoneme_tokenizer import PhonemeTokenizer

        if g2p not in (None, "phonemes"):
            raise TokenizerError(f"{folder} holds a phoneme tokenizer (its G2P in {PHONEMES_FILE}); g2p {g2p!r} "
                                 "cannot apply")
        return PhonemeTokenizer.from_dir(folder)
    step = None
    if g2p is not None:
        if g2p not in G2P_STEPS:
            raise TokenizerError(f"the mouth needs the g2p step {g2p!r}, which is not available here "
                                 f"(available: {sorted(G2P_STEPS) or 'none'})")
        step = G2P_STEPS[g2p]()
    return BPEFrontEnd.from_dir(folder, step)
