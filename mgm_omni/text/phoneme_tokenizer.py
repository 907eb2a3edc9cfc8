"""A BPE over phonemes: the text tokenizer of a small mouth that reads pronunciations, not spellings.

Text goes through the G2P (``g2p.G2P``), each phoneme symbol becomes one private-use character of a fixed
table (``symbol_table``), each word is prefixed with ``▁``, and a byte-free BPE (the ``tokenizers``
library) merges symbols within words. Every symbol of the table is in the base vocabulary, so an unseen
word always encodes (into smaller pieces) and nothing is ever unknown.

A tokenizer directory holds ``tokenizer.json`` (a plain Hugging Face file: it loads with
``tokenizers.Tokenizer.from_file`` and with ``text.Tokenizer.from_dir``, decodes to readable phonemes)
and ``phonemes.json`` (the G2P settings and the symbol table it was trained with). Ids: ``<|endoftext|>``
(pad) 0, ``<|im_end|>`` (eos) 1, ``<|im_start|>`` 2, the symbols and merges, then ``<|audio_start|>``,
``<|audio_end|>``, ``<|audio_sep|>`` as the last three ids (spec §1.2: ``text_size = len(tokenizer)``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, pre_tokenizers, trainers

from .errors import TokenizerError
from .g2p import G2P, ENGLISH_INVENTORY, MANDARIN_INVENTORY, G2PConfig, Word, display
from .normalize import PUNCTUATION
from .rules import is_sentence_end, is_skippable
from .token_ids import AUDIO_END, AUDIO_SEP, AUDIO_START, ENDOFTEXT, IM_END, IM_START, TokenIds

WORD_START = "▁"
SPECIALS_FIRST = (ENDOFTEXT, IM_END, IM_START)
SPECIALS_LAST = (AUDIO_START, AUDIO_END, AUDIO_SEP)
PHONEMES_FILE = "phonemes.json"
FORMAT = "mgm-omni/phoneme-bpe"
TABLE_VERSION = 1
_PUA_START = 0xE000


@functools.lru_cache(maxsize=1)
def symbol_table() -> dict[str, str]:
    """Phoneme symbol -> one private-use character, version ``TABLE_VERSION`` (append-only order).

    The English and Mandarin inventories, then every single character of them as a symbol of its own
    (``en:ˈ``, ``zh:3``): a symbol outside the table encodes character by character.
    """
    symbols = list(dict.fromkeys(ENGLISH_INVENTORY + MANDARIN_INVENTORY))
    known = set(symbols)
    for sym in list(symbols):
        lang, body = sym.split(":", 1)
        for ch in body:
            if f"{lang}:{ch}" not in known:
                known.add(f"{lang}:{ch}")
                symbols.append(f"{lang}:{ch}")
    return {sym: chr(_PUA_START + i) for i, sym in enumerate(symbols)}


def units_to_string(units: Iterable[Word | str], table: dict[str, str] | None = None) -> str:
    """G2P units as the string the BPE reads: ``▁`` + one character per symbol for each word, marks as
    themselves, everything separated by single spaces."""
    table = symbol_table() if table is None else table
    pieces = []
    for unit in units:
        if isinstance(unit, str):
            if unit not in PUNCTUATION:
                raise TokenizerError(f"unknown punctuation unit {unit!r}")
            pieces.append(unit)
            continue
        chars = [WORD_START]
        for sym in unit:
            ch = table.get(sym)
            if ch is None:  # a rare symbol: spell it out character by character
                lang, body = sym.split(":", 1) if ":" in sym else ("", sym)
                try:
                    ch = "".join(table[f"{lang}:{c}"] for c in body)
                except KeyError as exc:
                    raise TokenizerError(f"phoneme {sym!r} has a character outside the symbol table") from exc
            chars.append(ch)
        pieces.append("".join(chars))
    return " ".join(pieces)


class PhonemeG2P:
    """Text -> the string a phoneme BPE reads (a ``g2p`` step for ``text.frontend.BPEFrontEnd``)."""

    __name__ = "phoneme"

    def __init__(self, config: G2PConfig | None = None):
        self.g2p = G2P(config)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> PhonemeG2P:
        """The G2P settings a tokenizer directory was trained with (its ``phonemes.json``)."""
        return cls(_read_g2p_config(Path(path)))

    def __call__(self, text: str) -> str:
        return units_to_string(self.g2p(text))


class PhonemeTokenizer(TokenIds):
    """Text <-> ids through G2P + phoneme BPE, with the per-id rules of the chunk schedule.

    ``encode(text)`` phonemises; ``tokenize(markup)`` reads an already prepared string or chat markup
    with special tokens. ``decode`` gives phonemes (``" həlˈoʊ wˈɜːld."``), never the spelling.
    """

    def __init__(self, backend: _Backend, g2p_config: G2PConfig | None = None):
        self.backend = backend
        self.g2p_config = g2p_config if g2p_config is not None else G2PConfig()
        self._g2p: PhonemeG2P | None = None
        self._size = backend.get_vocab_size(with_added_tokens=True)
        for name in SPECIALS_FIRST + SPECIALS_LAST:
            self.token_to_id(name)  # fail at load time, not mid-generation
        if [self.token_to_id(t) for t in SPECIALS_LAST] != list(range(self._size - 3, self._size)):
            raise TokenizerError("the audio tokens must be the last three ids (spec §1.2)")
        self.pad_token_id = self.token_to_id(ENDOFTEXT)
        self.eos_token_id = self.token_to_id(IM_END)
        self._specials = frozenset(self.token_to_id(t) for t in SPECIALS_FIRST + SPECIALS_LAST)
        # What each id decodes to, as the tokenizer.json decoder writes it (a test checks they agree).
        self._texts = [_decoded(backend.id_to_token(i)) for i in range(self._size)]
        self.sentence_end_ids = frozenset(
            i for i, t in enumerate(self._texts) if i not in self._specials and is_sentence_end(t)
        )
        self.skippable_ids = frozenset(
            i for i, t in enumerate(self._texts) if i not in self._specials and is_skippable(t)
        )

    # ---- training and files ----

    @classmethod
    def train(
        cls,
        prepared: Iterable[str],
        vocab_size: int,
        g2p_config: G2PConfig | None = None,
        min_frequency: int = 2,
    ) -> PhonemeTokenizer:
        """Learn merges from prepared strings (``PhonemeG2P`` output) up to ``vocab_size`` ids in all.

        The base vocabulary is the special tokens, the marks, ``▁`` and the whole symbol table, so
        ``vocab_size`` must exceed that (``base_vocab_size()``); the rest are merges.
        """
        if not isinstance(vocab_size, int) or vocab_size < base_vocab_size():
            raise TokenizerError(f"vocab_size must be an int >= {base_vocab_size()} (the base vocabulary)")
        if not isinstance(min_frequency, int) or min_frequency < 1:
            raise TokenizerError(f"min_frequency must be a positive int, got {min_frequency!r}")
        backend = _Backend(models.BPE(unk_token=None))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(SPECIALS_LAST),
            min_frequency=min_frequency,
            special_tokens=list(SPECIALS_FIRST),
            initial_alphabet=[*PUNCTUATION, WORD_START, *symbol_table().values()],
            show_progress=False,
        )
        backend.train_from_iterator(prepared, trainer)
        backend.add_special_tokens(list(SPECIALS_LAST))
        backend.decoder = _decoder()
        return cls(backend, g2p_config)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> PhonemeTokenizer:
        """Load ``tokenizer.json`` + ``phonemes.json``; the symbol table must be this code's."""
        path = Path(path)
        try:
            backend = _Backend.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # OSError, bad JSON, or the bare Exception of the Rust side
            raise TokenizerError(f"{path}: cannot read tokenizer.json ({exc})") from exc
        return cls(backend, _read_g2p_config(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``phonemes.json`` into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        config = {"tokenizer_class": "PhonemeTokenizer", "eos_token": IM_END, "pad_token": ENDOFTEXT}
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        meta = {"format": FORMAT, "table_version": TABLE_VERSION, "g2p": self.g2p_info,
                "word_start": WORD_START, "symbols": symbol_table()}
        (path / PHONEMES_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # ---- the text front-end surface ----

    @property
    def g2p(self) -> PhonemeG2P:
        if self._g2p is None:  # espeak-ng starts only when text is first phonemised
            self._g2p = PhonemeG2P(self.g2p_config)
        return self._g2p

    @property
    def g2p_info(self) -> dict:
        return self.g2p.g2p.info

    @property
    def vocab_size(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"PhonemeTokenizer(size={self._size}, g2p={self.g2p_config})"

    def prepare(self, text: str) -> str:
        """Text as the BPE reads it (G2P, then the symbol characters)."""
        return self.g2p(text)

    def encode(self, text: str) -> list[int]:
        """Ids of plain text (phonemised; special-token strings in it are not special)."""
        return self.tokenize(self.prepare(text))

    def encode_units(self, units: Iterable[Word | str]) -> list[int]:
        """Ids of G2P units (lets a caller phonemise once and tokenize with several vocabularies)."""
        return self.tokenize(units_to_string(units))

    def tokenize(self, markup: str) -> list[int]:
        """Ids of a prepared string or chat markup; special tokens written literally are matched."""
        if not isinstance(markup, str):
            raise TokenizerError(f"tokenize expects str, got {type(markup).__name__}")
        return self.backend.encode(markup, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Phonemes of ``ids``: words start with a space, marks attach (``" həlˈoʊ, wˈɜːld."``)."""
        ids = self.checked_ids(ids)
        return "".join(self._texts[i] for i in ids if not (skip_special_tokens and i in self._specials))

    def id_to_token(self, idx: int) -> str:
        """Readable form of one id (``▁həl``, ``.``, ``<|im_end|>``)."""
        return _readable(self.backend_token(idx))

    def is_sentence_end(self, token: int) -> bool:
        """Spec §2.2 on the decoded id: the marks ``. ? ! ;`` (never a phoneme or special token)."""
        return token in self.sentence_end_ids

    def is_skippable(self, token: int) -> bool:
        """Spec §2.2 on the decoded id: only a bare word start ``▁`` (decodes to a space) qualifies."""
        return token in self.skippable_ids


def _read_g2p_config(path: Path) -> G2PConfig:
    """The G2P settings in a tokenizer directory's ``phonemes.json``, its symbol table checked."""
    try:
        meta = json.loads((path / PHONEMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: not a phoneme tokenizer directory ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("table_version") != TABLE_VERSION:
        raise TokenizerError(
            f"{path / PHONEMES_FILE}: format {meta.get('format')!r} v{meta.get('table_version')}, "
            f"expected {FORMAT!r} v{TABLE_VERSION}"
        )
    if meta.get("symbols") != symbol_table():
        raise TokenizerError(f"{path}: trained with a different phoneme symbol table than this code's")
    known = set(G2PConfig.__dataclass_fields__)
    return G2PConfig(**{k: v for k, v in meta.get("g2p", {}).items() if k in known})


def base_vocab_size() -> int:
    """Ids a phoneme BPE has before any merge: specials, marks, ``▁`` and the symbol table."""
    return len(SPECIALS_FIRST) + len(SPECIALS_LAST) + len(PUNCTUATION) + 1 + len(symbol_table())


@functools.lru_cache(maxsize=1)
def _display_map() -> dict[str, str]:
    return {ch: display(sym) for sym, ch in symbol_table().items()}


def _readable(token: str) -> str:
    shown = _display_map()
    return "".join(shown.get(ch, ch) for ch in token)


def _decoded(token: str) -> str:
    """What the ``tokenizer.json`` decoder makes of one token: ``▁`` is a space, symbols their text."""
    return _readable(token).replace(WORD_START, " ")


def _decoder():
    """Hugging Face decoder: ``▁`` -> space, each symbol character -> its IPA / pinyin text."""
    steps = [decoders.Replace(WORD_START, " ")]
    steps += [decoders.Replace(ch, text) for ch, text in _display_map().items()]
    return decoders.Sequence(steps)
