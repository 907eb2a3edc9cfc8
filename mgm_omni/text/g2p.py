"""Grapheme-to-phoneme: English through espeak-ng (in process), Mandarin through pypinyin with tones.

``G2P()("Hello, 你好!")`` -> ``[("en:h", "en:ə", "en:l", "en:ˈoʊ"), ",", ("zh:n", "zh:i3", "zh:h", "zh:ao3"), "!"]``

The output is a list of units: a *word* (a tuple of phoneme symbols, each named ``lang:symbol`` so the
two inventories never collide) or a punctuation mark of ``normalize.PUNCTUATION``. English words are
espeak-ng's (it joins some unstressed function words: ``on the`` -> ``ɔnðə``), with stress marks on
their vowels. A Mandarin span between two marks is one word of initials and toned finals
(``zh:zh zh:ong1``): pypinyin has no word list to segment with, so the phoneme BPE learns which
syllables go together. Unseen words are read by espeak-ng's letter-to-sound rules and pypinyin's
per-character readings, so every input gives phonemes.

espeak-ng is the library and data bundled by the ``espeakng-loader`` wheel (1.52), driven through
ctypes; the system ``libespeak-ng`` is the fallback. espeak-ng keeps global state, so calls are
serialised by one lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import re
import threading
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from .errors import TextError
from .normalize import LANGS, PAUSE, PUNCTUATION, normalize

log = logging.getLogger(__name__)

Word = tuple[str, ...]

_ESPEAK_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: no audio device, no thread
_ESPEAK_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: return an error instead of exit()
_ESPEAK_UTF8 = 1  # espeakCHARS_UTF8
_ESPEAK_IPA_UNDERSCORE = 0x02 | (ord("_") << 8)  # IPA output, "_" between the phonemes of a word
_LANG_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak's "(fr)" language-switch marks

ZH_INITIALS = ("zh", "ch", "sh", *"bpmfdtnlgkhjqxrzcsyw")
# TONE3 finals as pypinyin writes them after a non-strict initial (y, w count as initials; ü is v).
ZH_FINALS = (
    "a", "ai", "an", "ang", "ao", "e", "ei", "en", "eng", "er", "i", "ia", "ian", "iang", "iao", "ie", "in",
    "ing", "iong", "iu", "o", "ong", "ou", "u", "ua", "uai", "uan", "uang", "ue", "ui", "un", "uo", "v", "ve",
    "ê", "m", "n", "ng", "hm", "hng",
)  # fmt: skip
_ZH_SYLLABLE = re.compile(r"^(zh|ch|sh|[bpmfdtnlgkhjqxrzcsyw])?([a-zêü]*?[aeiouvêü][a-z]*)([1-5])$")


class G2PError(TextError):
    """The phonemiser cannot start or gave no usable output."""


@dataclass(frozen=True)
class G2PConfig:
    """How text becomes phonemes; saved with a tokenizer so encoding stays what it was trained on.

    Args:
        en_voice: espeak-ng voice for English (``en-us``, ``en-gb``, ...).
        zh_tone_sandhi: apply pypinyin's tone sandhi (你好 ni2 hao3) instead of citation tones.
        default_lang: language of text with no letter at all (``"123"``).
    """

    en_voice: str = "en-us"
    zh_tone_sandhi: bool = False
    default_lang: str = "en"

    def __post_init__(self):
        if not isinstance(self.en_voice, str) or not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*", self.en_voice):
            raise G2PError(f"en_voice must be an espeak-ng voice name like 'en-us', got {self.en_voice!r}")
        if not isinstance(self.zh_tone_sandhi, bool):
            raise G2PError(f"zh_tone_sandhi must be a bool, got {self.zh_tone_sandhi!r}")
        if self.default_lang not in LANGS:
            raise G2PError(f"default_lang must be one of {LANGS}, got {self.default_lang!r}")


class _Espeak:
    """The espeak-ng shared library, initialised once per process."""

    def __init__(self):
        try:
            import espeakng_loader

            lib_path = espeakng_loader.get_library_path()
            data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        except ImportError:
            lib_path, data_parent = ctypes.util.find_library("espeak-ng"), None
            if lib_path is None:
                raise G2PError(
                    "espeak-ng not found: pip install espeakng-loader==0.2.4 (or apt-get install espeak-ng)"
                ) from None
            log.warning("espeakng-loader is not installed; using the system %s", lib_path)
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_ESPEAK_SYNCHRONOUS, 0, data_parent, _ESPEAK_DONT_EXIT) <= 0:
            raise G2PError(f"espeak-ng failed to initialise ({lib_path})")
        self.lib = lib
        self.version = lib.espeak_Info(None).decode()
        self.voice = None
        self.lock = threading.Lock()

    def words(self, text: str, voice: str) -> list[list[str]]:
        """Phoneme symbols of each word espeak-ng reads in ``text``."""
        with self.lock:
            if voice != self.voice:
                if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise G2PError(f"espeak-ng has no voice {voice!r}")
                self.voice = voice
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            clauses = []
            while ptr.value:
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _ESPEAK_UTF8, _ESPEAK_IPA_UNDERSCORE)
                clauses.append((out or b"").decode("utf-8"))
        words = []
        for word in _LANG_FLAG.sub("", " ".join(clauses)).split():
            symbols = [s for s in word.split("_") if s]
            if symbols:
                words.append(symbols)
        return words


@functools.lru_cache(maxsize=1)
def _espeak() -> _Espeak:
    return _Espeak()


def split_syllable(syllable: str) -> tuple[str, ...]:
    """A TONE3 pinyin syllable as (initial, toned final) symbols: ``zhong1`` -> ``("zh:zh", "zh:ong1")``.

    A syllable with no vowel letter (``n2``, ``m2``, ``hm5``) is one symbol.
    """
    m = _ZH_SYLLABLE.match(syllable)
    if m is None:
        if not re.fullmatch(r"[a-zêü]+[1-5]", syllable):
            raise G2PError(f"not a TONE3 pinyin syllable: {syllable!r}")
        return (f"zh:{syllable}",)
    initial, final, tone = m.groups()
    return (f"zh:{initial}", f"zh:{final}{tone}") if initial else (f"zh:{final}{tone}",)


@functools.lru_cache(maxsize=1)
def pypinyin_symbols() -> tuple[str, ...]:
    """Every symbol the installed pypinyin can give: all readings of its dictionaries, split
    (a subset of ``MANDARIN_INVENTORY``, which a test checks)."""
    from pypinyin.constants import PHRASES_DICT, PINYIN_DICT
    from pypinyin.contrib.tone_convert import to_tone3

    readings = {r for value in PINYIN_DICT.values() for r in value.split(",")}
    readings.update(r for phrase in PHRASES_DICT.values() for options in phrase for r in options)
    symbols = set()
    for reading in readings:
        syllable = to_tone3(reading, v_to_u=False, neutral_tone_with_five=True)
        if syllable and syllable[-1] not in "12345":
            syllable += "5"
        try:
            symbols.update(split_syllable(syllable))
        except G2PError:
            log.debug("pypinyin reading %r is not a syllable; skipped", reading)
    return tuple(sorted(symbols))


class G2P:
    """Text -> units (phoneme words and punctuation marks); see the module docstring."""

    def __init__(self, config: G2PConfig | None = None):
        self.config = config if config is not None else G2PConfig()
        if not isinstance(self.config, G2PConfig):
            raise G2PError(f"config must be a G2PConfig, got {type(self.config).__name__}")
        self._espeak = _espeak()
        from pypinyin import Style, lazy_pinyin

        self._pinyin = functools.partial(
            lazy_pinyin,
            style=Style.TONE3,
            errors="ignore",
            v_to_u=False,
            neutral_tone_with_five=True,
            tone_sandhi=self.config.zh_tone_sandhi,
        )

    @property
    def info(self) -> dict:
        """The config and the phonemiser versions (saved with a tokenizer as a record)."""
        return {
            **asdict(self.config),
            "espeak_ng": self._espeak.version,
            "pypinyin": metadata.version("pypinyin"),
        }

    def __call__(self, text: str) -> list[Word | str]:
        units: list[Word | str] = []
        for item in normalize(text, self.config.default_lang):
            if isinstance(item, str):
                if not units:  # nothing spoken yet: nothing to mark
                    continue
                if not isinstance(units[-1], str):
                    units.append(item)
                elif units[-1] == PAUSE:  # the span between two marks gave no phonemes: keep the stronger
                    units[-1] = item
            elif item.lang == "en":
                units.extend(self.english(item.text))
            else:
                word = self.mandarin(item.text)
                if word:
                    units.append(word)
        return units

    def english(self, text: str) -> list[Word]:
        """Phoneme words of normalised English text (no digits, no punctuation but apostrophes)."""
        return [tuple(f"en:{s}" for s in word) for word in self._espeak.words(text, self.config.en_voice)]

    def mandarin(self, text: str) -> Word:
        """One word of initials and toned finals for a run of Han characters."""
        return tuple(s for syllable in self._pinyin(text) for s in split_syllable(_with_tone(syllable)))

    def inventory(self) -> tuple[str, ...]:
        """Symbols this G2P is known to produce: espeak-ng's English set, then the Mandarin initials and
        toned finals (other symbols are possible for rare English words)."""
        return ENGLISH_INVENTORY + MANDARIN_INVENTORY


def _with_tone(syllable: str) -> str:
    return syllable if syllable[-1:] in ("1", "2", "3", "4", "5") else syllable + "5"


def display(symbol: str) -> str:
    """A symbol without its language prefix: ``en:ˈoʊ`` -> ``ˈoʊ``."""
    return symbol.split(":", 1)[1] if ":" in symbol else symbol


def phoneme_string(units: list[Word | str]) -> str:
    """Readable form of G2P units: ``həlˈoʊ, ni3hao3!``."""
    out = []
    for unit in units:
        if isinstance(unit, str):
            if unit not in PUNCTUATION:
                raise G2PError(f"unknown punctuation unit {unit!r}")
            out.append(unit)
        else:
            out.append((" " if out else "") + "".join(display(s) for s in unit))
    return "".join(out)


# espeak-ng 1.52 en-us symbols (IPA, "_"-separated), as seen on the fortunes, WordNet and HSK English
# sentences and on made-up words; with stress marks on the vowels. Anything else still encodes through
# the tokenizer's single-character fallback.
_ENGLISH_SYMBOLS = (
    'aɪ', 'aɪə', 'aɪɚ', 'aʊ', 'b', 'd', 'dʒ', 'eɪ', 'f', 'h', 'i', 'iə', 'iː', 'j', 'k', 'l', 'm', 'n',
    'nʲ', 'n̩', 'o', 'oʊ', 'p', 'r', 's', 't', 'tʃ', 'uː', 'v', 'w', 'x', 'z', 'æ', 'ð', 'ŋ', 'ɐ', 'ɑː',
    'ɑːɹ', 'ɔ', 'ɔɪ', 'ɔː', 'ɔːɹ', 'ə', 'əl', 'ɚ', 'ɛ', 'ɛɹ', 'ɜː', 'ɡ', 'ɪ', 'ɪɹ', 'ɬ', 'ɹ', 'ɾ', 'ʃ',
    'ʊ', 'ʊɹ', 'ʌ', 'ʒ', 'ʔ', 'ˈaɪ', 'ˈaɪə', 'ˈaɪɚ', 'ˈaʊ', 'ˈeɪ', 'ˈiə', 'ˈiː', 'ˈoʊ', 'ˈu', 'ˈuː',
    'ˈæ', 'ˈææ', 'ˈɑː', 'ˈɑːɹ', 'ˈɑ̃', 'ˈɔ', 'ˈɔɪ', 'ˈɔː', 'ˈɔːɹ', 'ˈɔ̃', 'ˈə', 'ˈɚ', 'ˈɛ', 'ˈɛɹ',
    'ˈɜː', 'ˈɪ', 'ˈɪɹ', 'ˈʊ', 'ˈʊɹ', 'ˈʌ', 'ˌaɪ', 'ˌaɪə', 'ˌaɪɚ', 'ˌaʊ', 'ˌeɪ', 'ˌiə', 'ˌiː', 'ˌn̩',
    'ˌoʊ', 'ˌuː', 'ˌæ', 'ˌææ', 'ˌɐ', 'ˌɑː', 'ˌɑːɹ', 'ˌɔ', 'ˌɔɪ', 'ˌɔː', 'ˌɔːɹ', 'ˌə', 'ˌɛ', 'ˌɛɹ',
    'ˌɜː', 'ˌɪ', 'ˌɪɹ', 'ˌʊ', 'ˌʊɹ', 'ˌʌ', 'θ', 'ᵻ',
)  # fmt: skip
ENGLISH_INVENTORY: tuple[str, ...] = tuple(f"en:{s}" for s in _ENGLISH_SYMBOLS)
MANDARIN_INVENTORY: tuple[str, ...] = tuple(f"zh:{i}" for i in ZH_INITIALS) + tuple(
    f"zh:{f}{t}" for f in ZH_FINALS for t in "12345"
)
