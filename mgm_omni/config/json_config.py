"""The base of every typed config: dataclass fields that round-trip with a JSON file.

``from_dict`` keeps every key it does not model in ``extra``, so ``to_dict`` gives back the file it
was read from. ``strict=True`` (used for user-supplied overrides) rejects unknown keys instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="JsonConfig")


class ConfigError(ValueError):
    """A config value or key is invalid."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class JsonConfig:
    """Base: dataclass fields plus preserved unknown keys, with exact JSON round-trip."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _source_keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    # JSON key -> field name, for keys whose field is named differently.
    json_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_") and f.name != "extra"]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], strict: bool = False) -> C:
        """Build from a parsed ``config.json``; unknown keys go to ``extra`` (or raise if ``strict``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = set(cls.field_names())
        known, extra = {}, {}
        for key, value in data.items():
            name = cls.json_aliases.get(key, key)
            if name in names:
                known[name] = value
            elif strict:
                hint = difflib.get_close_matches(key, sorted(names), n=1)
                raise ConfigError(
                    f"unknown config key {key!r} for {cls.__name__}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )
            else:
                extra[key] = value
        try:
            cfg = cls(**known, extra=extra, _source_keys=tuple(data))
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from exc
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the source keys in their order, then fields set away from their defaults."""
        inverse = {v: k for k, v in self.json_aliases.items()}
        values = {inverse.get(n, n): getattr(self, n) for n in self.field_names()}
        defaults = {inverse.get(f.name, f.name): _default_of(f) for f in dataclasses.fields(self)}
        out: dict[str, Any] = {}
        order = list(self._source_keys) if self._source_keys is not None else list(values)
        for key in order:
            if key in values:
                out[key] = _jsonable(values[key])
            elif key in self.extra:
                out[key] = self.extra[key]
        for key, value in values.items():
            if key not in out and (self._source_keys is None or value != defaults.get(key)):
                out[key] = _jsonable(value)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike) -> C:
        return cls.from_dict(read_json(path))

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def replace(self: C, **overrides: Any) -> C:
        """A copy with some fields changed; unknown names raise :class:`ConfigError`."""
        names = set(self.field_names())
        for key in overrides:
            if key not in names:
                hint = difflib.get_close_matches(key, sorted(names), n=1)
                raise ConfigError(
                    f"unknown config key {key!r} for {type(self).__name__}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )
        return dataclasses.replace(self, **overrides)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, turning I/O and syntax problems into one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
