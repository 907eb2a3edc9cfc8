"""Qwen byte-level BPE tokenizer over the ``tokenizers`` library.

Qwen2, Qwen2.5 and Qwen3 share one BPE (151 643 tokens). A SpeechLM checkpoint adds ``<|audio_start|>``,
``<|audio_end|>``, ``<|audio_sep|>`` and the 4 × 6563 ``speech_layer_{i}_{j}`` tokens after the Qwen3
added tokens (spec §1.2, §1.7). A checkpoint may ship ``tokenizer.json`` or only the slow-tokenizer
files (``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` / ``added_tokens.json``); both load
here to the same ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend

from .errors import TokenizerError
from .token_ids import ENDOFTEXT, IM_END, TokenIds

# Qwen2's pre-tokenizer split: contractions, letter runs (with one leading non-letter), single digits,
# punctuation runs, newline runs, whitespace. Single digits matter: "2024" is 4 tokens.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_SPECIAL_MAP_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
)


def build_qwen_bpe(vocab: Mapping[str, int], merges: Iterable[tuple[str, str]]) -> _Backend:
    """The Qwen2 byte-level BPE pipeline (no added tokens): NFC, Qwen2 split, byte-level, BPE.

    Equivalent to what ``transformers`` converts a slow ``Qwen2Tokenizer`` into.
    """
    backend = _Backend(
        models.BPE(
            dict(vocab), list(merges), unk_token=None, fuse_unk=False, byte_fallback=False, dropout=None
        )
    )
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            # use_regex=False: the split above already did GPT-2's job; only map bytes to unicode.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
        ]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse a GPT-2 style ``merges.txt`` (optional ``#version`` header, one ``left right`` pair a line)."""
    merges = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise TokenizerError(f"{path}:{lineno}: a merge must be two tokens separated by one space")
            merges.append((pair[0], pair[1]))
    return merges


class Tokenizer(TokenIds):
    """Text <-> ids for the MLLM and the SpeechLM.

    ``encode`` adds nothing (no BOS/EOS; Qwen has no BOS) and matches added tokens written literally in the
    text (``<|im_start|>`` etc.), as the official ``tokenizer(text)`` call does. In a SpeechLM tokenizer
    that includes the ``speech_layer_{i}_{j}`` strings, which are plain added tokens officially too: a
    text that spells one out gets a speech id (>= ``tokenizer_text_size``), never a valid text id.
    """

    def __init__(self, backend: _Backend, eos_token: str = IM_END, pad_token: str = ENDOFTEXT):
        self.backend = backend
        self._size = backend.get_vocab_size(with_added_tokens=True)
        # Resolve now so a tokenizer without them fails at load time, not mid-generation.
        self.eos_token_id = self.token_to_id(eos_token)
        self.pad_token_id = self.token_to_id(pad_token)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a Hugging Face tokenizer directory.

        Uses ``tokenizer.json`` if present, else builds the Qwen2 BPE from ``vocab.json`` + ``merges.txt``.
        Added tokens from ``tokenizer_config.json`` (``added_tokens_decoder``) and ``added_tokens.json`` are
        then added with their ids and special flags (those already in ``tokenizer.json`` are checked).
        """
        path = Path(path)
        if not path.is_dir():
            raise TokenizerError(f"{path}: tokenizer directory not found")
        config = _read_json(path / "tokenizer_config.json") or {}
        special_map = _read_json(path / "special_tokens_map.json") or {}
        if (path / "tokenizer.json").is_file():
            try:
                backend = _Backend.from_file(str(path / "tokenizer.json"))
            except Exception as exc:  # the Rust side raises a bare Exception on bad JSON
                raise TokenizerError(f"{path / 'tokenizer.json'}: cannot read ({exc})") from exc
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            backend = build_qwen_bpe(_read_json(path / "vocab.json"), read_merges(path / "merges.txt"))
        else:
            raise TokenizerError(f"{path}: needs tokenizer.json, or vocab.json and merges.txt")
        _add_tokens(backend, _added_token_table(path, config, special_map), source=str(path))
        eos = _token_content(config.get("eos_token", special_map.get("eos_token"))) or IM_END
        pad = _token_content(config.get("pad_token", special_map.get("pad_token"))) or ENDOFTEXT
        return cls(backend, eos_token=eos, pad_token=pad)

    def __repr__(self) -> str:
        return f"Tokenizer(size={self._size}, eos={self.eos_token_id}, pad={self.pad_token_id})"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special additions."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects str, got {type(text).__name__}")
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        except TypeError as exc:  # the Rust side rejects strings that are not valid UTF-8
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as uni:
                raise TokenizerError(
                    f"text is not valid Unicode ({uni.reason} at index {uni.start})"
                ) from None
            raise TokenizerError(f"cannot encode text ({exc})") from exc

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``. Invalid UTF-8 (a token holding part of a character) decodes to U+FFFD.

        Raises ``TokenizerError`` for a negative or out-of-range id (e.g. a ``-500`` placeholder).
        """
        return self.backend.decode(self.checked_ids(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, idx: int) -> str:
        """Token string of an id (byte-level form for BPE tokens, e.g. ``'Ġworld'``)."""
        return self.backend_token(idx)


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: cannot read JSON ({exc})") from exc


def _token_content(entry) -> str | None:
    if isinstance(entry, dict):
        return entry.get("content")
    return entry if isinstance(entry, str) else None


def _added_token_table(path: Path, config: dict, special_map: dict) -> dict[int, AddedToken]:
    """id -> AddedToken from ``added_tokens_decoder`` (full flags), then ``added_tokens.json`` (ids only)."""
    table: dict[int, AddedToken] = {}
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        table[int(key)] = AddedToken(
            entry["content"],
            single_word=entry.get("single_word", False),
            lstrip=entry.get("lstrip", False),
            rstrip=entry.get("rstrip", False),
            normalized=entry.get("normalized", not entry.get("special", False)),
            special=entry.get("special", False),
        )
    # added_tokens.json has no flags: a token is special if a special-token field names it (HF's rule).
    specials = {_token_content(config.get(k, special_map.get(k))) for k in _SPECIAL_MAP_KEYS}
    for source in (config, special_map):
        specials.update(_token_content(t) for t in source.get("additional_special_tokens") or [])
    for content, idx in (_read_json(path / "added_tokens.json") or {}).items():
        if idx in table:
            if table[idx].content != content:
                raise TokenizerError(
                    f"{path}: id {idx} is {table[idx].content!r} in tokenizer_config.json "
                    f"but {content!r} in added_tokens.json"
                )
            continue
        special = content in specials
        table[idx] = AddedToken(content, normalized=not special, special=special)
    return table


def _add_tokens(backend: _Backend, table: Mapping[int, AddedToken], source: str) -> None:
    """Add ``table`` to ``backend`` so each token gets exactly its id (ids must continue the vocabulary)."""
    pending: list[AddedToken] = []
    expected: list[int] = []
    for idx in sorted(table):
        token = table[idx]
        if backend.token_to_id(token.content) == idx:
            continue  # already there (tokenizer.json lists it, or it is a BPE entry)
        next_free = backend.get_vocab_size(with_added_tokens=True) + len(pending)
        if idx != next_free:
            raise TokenizerError(
                f"{source}: added token {token.content!r} wants id {idx}, but the next free id is {next_free}"
            )
        pending.append(token)
        expected.append(idx)
    if not pending:
        return
    backend.add_tokens(pending)
    for token, idx in zip(pending, expected, strict=True):
        if backend.token_to_id(token.content) != idx:
            raise TokenizerError(f"{source}: added token {token.content!r} did not get id {idx}")
