"""Which decode step runs a SpeechLM on this machine: measured on first use, cached per CPU and shape.

The fastest step depends on the machine, not only on its instruction sets: on this project's AMD EPYC
the native bf16 step is 3x the official one, while on a 2-core Xeon (AVX-512, AMX) the same build ran
slower than oneDNN's packed PyTorch step. So :func:`choose_step` times the candidates on the model's
own shapes and takes the fastest *exact* one:

- ``native-<weights>-<isa>``: the native step (``native_step``) on every instruction set this CPU can
  run (``generic``, ``avx2``, ``avx512``, ``amx``); weights in the model's dtype, or ``int8`` when the
  caller asked for int8 (the only inexact candidates, and then the only ones);
- ``torch-packed``: PyTorch with oneDNN-packed weights (``cpu_linear``), where this CPU packs the dtype;
- ``torch``: plain PyTorch.

Every candidate's logits are checked against the plain PyTorch step on the same rows first (relative
error under :data:`TOLERANCE` of the weight format), so a path that computes something else (a
miscompiled kernel, say) is dropped, never chosen. The choice is stored in
``$MGM_OMNI_CACHE/step_choice.json`` (default ``~/.cache/mgm-omni``) under the CPU model and flags,
the shapes, dtype, quantisation, thread count and torch version, so later runs skip the timing.
``override`` (or ``$MGM_OMNI_STEP``) names a step (``native``, ``native-bf16``, ``native-bf16-avx2``,
``torch-packed``, ``torch``) and skips both. ``log.info`` says what was chosen and why (``-v``).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field

import torch

from mgm_omni.generation.choice_cache import machine_key, read_choices, write_choice
from mgm_omni.generation.speech.cpu_linear import LinearSwap, packing_available
from mgm_omni.generation.speech.native_build import available as native_available
from mgm_omni.generation.speech.native_step import NativeStep, supported_isas
from mgm_omni.generation.speech.runner import SpeechLMRunner, speech_head
from mgm_omni.models.speech_lm import SpeechLM

log = logging.getLogger(__name__)

TOLERANCE = {"fp32": 1e-3, "bf16": 6e-2, "int8": 0.2}  # relative L2 error of the logits vs plain torch
CACHE_VERSION = 1
CACHE_FILE = "step_choice.json"


class StepChoiceError(ValueError):
    """An override names no step that can run this model here."""


@dataclass(frozen=True)
class StepChoice:
    """The decode step to use.

    Attributes:
        name: ``native-bf16-avx512``, ``torch-packed``, ``torch`` ...
        timings_ms: median step time of every candidate measured now (empty from the cache or an override).
        errors: relative logit error of each candidate against plain PyTorch (those measured now).
        source: ``"measured"``, ``"cache"`` or ``"override"``.
    """

    name: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    source: str = "measured"

    @property
    def native(self) -> str | None:
        """Weight format for :class:`NativeStep`, or None for a PyTorch step."""
        return self.name.split("-")[1] if self.name.startswith("native-") else None

    @property
    def isa(self) -> str:
        parts = self.name.split("-")
        return parts[2] if self.name.startswith("native-") and len(parts) > 2 else "auto"

    @property
    def pack(self) -> bool:
        return self.name == "torch-packed"

    def describe(self) -> str:
        if not self.timings_ms:
            return f"decode step {self.name} ({self.source})"
        ranked = sorted(self.timings_ms.items(), key=lambda kv: kv[1])
        return f"decode step {self.name} (measured: " + ", ".join(f"{n} {t:.2f} ms" for n, t in ranked) + ")"


def model_format(model: SpeechLM, quantize: str | None = None) -> str:
    if quantize == "int8":
        return "int8"
    return "bf16" if model.lm_head.weight.dtype == torch.bfloat16 else "fp32"


def candidates(model: SpeechLM, quantize: str | None = None) -> list[str]:
    """The steps worth timing for ``model`` here."""
    fmt = model_format(model, quantize)
    names = []
    if model.lm_head.weight.device.type == "cpu" and native_available():
        names += [f"native-{fmt}-{isa}" for isa in supported_isas()]
    if quantize is None:
        if packing_available(model.lm_head.weight):
            names.append("torch-packed")
        names.append("torch")
    return names


def choose_step(model: SpeechLM, quantize: str | None = None, override: str | None = None,
                threads: int | None = None, use_cache: bool = True, steps: int = 6) -> StepChoice:
    """The decode step for ``model`` on this machine (see the module docstring).

    Args:
        quantize: ``"int8"`` to choose among int8 steps only; None for exact steps.
        override: a step name (or ``native``/``native-<weights>``); default ``$MGM_OMNI_STEP``.
        threads: threads the steps will run with (default ``torch.get_num_threads()``).
        use_cache: read and write the on-disk choice.
        steps: timed steps per candidate and round (3 rounds, candidates interleaved).
    """
    override = override or os.environ.get("MGM_OMNI_STEP") or None
    if override:
        return StepChoice(_resolve_override(model, override, quantize), source="override")
    threads = threads or torch.get_num_threads()
    key = _cache_key(model, quantize, threads)
    names = candidates(model, quantize)
    if use_cache:
        hit = read_choices(CACHE_FILE).get(key)
        if hit and hit.get("name") in names:
            return StepChoice(hit["name"], source="cache")
    if len(names) == 1:
        return StepChoice(names[0], source="measured")
    timings, errors = measure(model, names, threads, steps)
    tol = TOLERANCE[model_format(model, quantize)]
    exact = [n for n in timings if errors[n] <= tol]
    if not exact:
        raise StepChoiceError(f"no decode step agrees with the PyTorch step (errors {errors})")
    best = min(exact, key=timings.get)
    for name in set(timings) - set(exact):
        log.warning("decode step %s disagrees with PyTorch (relative error %.3g): not used", name, errors[name])
    choice = StepChoice(best, timings, errors, "measured")
    if use_cache:
        write_choice(CACHE_FILE, key, {"name": best, "timings_ms": timings, "errors": errors, "when": time.time()})
    return choice


def measure(model: SpeechLM, names: list[str], threads: int, steps: int = 6, context: int = 64,
            rounds: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Median step milliseconds and relative logit error (vs plain PyTorch) of each named step."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)
    n_rows = context + 2 + rounds * steps
    text = torch.randint(0, cfg.text_size, (n_rows, 1), generator=gen)
    speech = torch.randint(0, cfg.tokenizer_speech_size, (n_rows, model.num_slots), generator=gen)
    rows = torch.cat([text, speech], dim=1)  # (T, 1 + k)
    runners, outputs = {}, {}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    swap = LinearSwap(model, skip=("lm_head",)) if "torch-packed" in names else None
    if swap is not None and not len(swap):
        names = [n for n in names if n != "torch-packed"]

    natives: dict[str, NativeStep] = {}  # one weight copy per format, shared by its instruction sets

    def use(name: str) -> None:  # the model's own layers: packed copies for torch-packed only
        if swap is not None:
            swap.packed() if name == "torch-packed" else swap.plain()
        if name.startswith("native-"):
            natives[name.split("-")[1]].set_isa(name.split("-")[2])

    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        for name in names:  # prefill and one step each; that step's logits are compared
            if name.startswith("native-"):
                fmt = name.split("-")[1]
                natives.setdefault(fmt, NativeStep(model, fmt, threads))
            use(name)
            runner = _runner(model, name, threads, natives)
            runner.start([rows[:context]])
            outputs[name] = runner.step(rows[context:context + 1]).float()
            runners[name] = runner
        pos = context + 1
        for _ in range(rounds):  # interleaved, so every candidate sees the same machine load
            for name in names:
                use(name)
                for i in range(steps):
                    row = rows[pos + i:pos + i + 1]
                    t0 = time.perf_counter()
                    runners[name].step(row)
                    times[name].append(time.perf_counter() - t0)
            pos += steps
    finally:
        if swap is not None:
            swap.plain()
        torch.set_num_threads(previous_threads)
    ref = outputs.get("torch")
    if ref is None:
        runner = _runner(model, "torch", threads)
        runner.start([rows[:context]])
        ref = runner.step(rows[context:context + 1]).float()
    errors = {n: _rel_error(outputs[n], ref) for n in names}
    timings = {n: statistics.median(t) * 1e3 for n, t in times.items() if t}
    return timings, errors


def _runner(model: SpeechLM, name: str, threads: int, natives: dict | None = None) -> SpeechLMRunner:
    if name.startswith("native-"):
        _, fmt, isa = name.split("-")
        step = natives[fmt] if natives else NativeStep(model, fmt, threads, isa)
        return SpeechLMRunner(model, native=step, initial_rows=256)
    return SpeechLMRunner(model, head=speech_head(model, pack=name == "torch-packed"), initial_rows=256)


def _rel_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _resolve_override(model: SpeechLM, override: str, quantize: str | None) -> str:
    names = candidates(model, quantize)
    fmt = model_format(model, quantize)
    wanted = override.strip().lower()
    if wanted in ("native", f"native-{fmt}"):
        wanted = f"native-{fmt}-auto"
    if wanted.startswith("native-") and wanted.count("-") == 1:
        wanted += "-auto"
    if wanted.startswith("native-") and wanted.endswith("-auto"):
        if model.lm_head.weight.device.type == "cpu" and native_available():
            return wanted
    if wanted in names:
        return wanted
    raise StepChoiceError(f"decode step {override!r} cannot run this model here; candidates: {', '.join(names)}")


def _cache_key(model: SpeechLM, quantize: str | None, threads: int) -> str:
    def stack(c) -> str:
        return (f"{c.num_hidden_layers}x{c.hidden_size}/{c.num_attention_heads}_{c.num_key_value_heads}x"
                f"{c.dim_per_head}/{c.intermediate_size}")

    cfg = model.cfg
    shape = stack(cfg) + ("+" + stack(model.tts_adapter.cfg) if model.tts_adapter is not None else "")
    shape += f"|head {model.num_slots}x{cfg.tokenizer_speech_size}|{model.lm_head.weight.dtype}|{quantize}"
    return f"{machine_key()}|{shape}|threads={threads}|torch={torch.__version__}|v{CACHE_VERSION}"


def step_for_cpu(model: SpeechLM, quantize: str | None = None) -> tuple[NativeStep | None, bool | None]:
    """``(native step or None, pack)`` for a :class:`SpeechGenerator` that left both to the machine.

    The measured choice (cached); it is logged at INFO (``-v``). Should choosing fail, the previous
    default (the native step where it builds, ``pack`` left to the caller) is returned and the reason logged.
    """
    try:
        choice = choose_step(model, quantize)
    except Exception as exc:  # choosing must never stop a run
        log.warning("decode step choice failed (%s); using the native step where it builds", exc)
        try:
            return NativeStep(model, "int8" if quantize else None), False
        except Exception:  # noqa: BLE001 - no native step either: PyTorch
            return None, None
    log.info(choice.describe())
    if choice.native is not None:
        return NativeStep(model, choice.native, isa=choice.isa), False
    return None, choice.pack
