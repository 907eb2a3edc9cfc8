"""Speed of our own mouth at its target sizes (random weights; real HiFi-GAN V1 and Whisper-base layers).

    .venv/bin/python benchmarks/bench_own_mouth.py [--grids 25 10] [--seconds 10] [--threads 1]
    .venv/bin/python benchmarks/bench_own_mouth.py --model outputs/mouth_small --threads 2   # a trained mouth
    .venv/bin/python benchmarks/bench_own_mouth.py --model mgm_omni/hub/assets/mouth --vocoder-dtypes float32 auto

Assembles a small random own mouth per flow chunk size (SpeechLM hidden 384 x 6 layers + 2-layer adapter,
``recipes/configs/speechlm_stage1_small.yaml``; flow ``recipes/configs/flow_small.yaml``; 512 units over Whisper
base layer 4; GE2E; HiFi-GAN V1 universal) with the same builder as the shipped mouth, then measures, in one
process:

* the pipeline: first audio (s) and RTF of a greedy synthesis bounded to ``--seconds`` of audio, with the
  voice's prompt prefilled (every stream after a voice's first) and without (its first stream);
* the parts per second of audio: SpeechLM rows, the flow (cached stream vs one offline pass), HiFi-GAN
  (one call vs :class:`HopVocoder` across hops), so the RTF can be attributed.

The random SpeechLM never ends an utterance, so every run is cut at the row budget. With ``--model`` the same
measurements run on a given (trained) mouth directory instead, with its shipped voice; a trained SpeechLM ends
the sentence itself (``--seconds`` only bounds it), and each ``--vocoder-dtypes`` entry is measured in turn in the
same process (``auto``: the precision :mod:`~mgm_omni.generation.wave.vocoder_choice` chooses for this machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _machine import describe_cpu

ROOT = Path(__file__).resolve().parents[1]


def build_mouth(out: Path, grid: int, whisper: bool, ode_steps: int = 10, cfg_rate: float = 0.7) -> Path:
    """A random own mouth at the small sizes (flow chunk ``grid`` tokens)."""
    import json

    import soundfile as sf
    from safetensors.torch import save_file

    from mgm_omni.checkpoint import save_state_dict
    from mgm_omni.config import SpeechLMConfig
    from mgm_omni.generation.wave.own_frontend import whisper_base_encoder
    from mgm_omni.hub.own_mouth import OwnMouthParts, assemble_own_mouth
    from mgm_omni.hub.own_mouth_tiny import SENTENCES, _randomise, reference_clip
    from mgm_omni.models.flow import CausalFlow
    from mgm_omni.models.flow_config import FlowConfig
    from mgm_omni.models.speech_lm import random_speech_lm
    from mgm_omni.models.unit_tokenizer import UnitTokenizerConfig, WhisperUnitTokenizer
    from mgm_omni.text.phoneme_tokenizer import PhonemeG2P, PhonemeTokenizer, base_vocab_size

    work = out.with_name(out.name + ".parts")
    work.mkdir(parents=True, exist_ok=True)
    g2p = PhonemeG2P()
    text = PhonemeTokenizer.train([g2p(s) for s in SENTENCES] * 2, base_vocab_size() + 40)
    text.save(work / "text")
    layer = 4 if whisper else 1
    cfg = UnitTokenizerConfig(layer=layer, num_units=512) if whisper else UnitTokenizerConfig(
        d_model=64, heads=2, ffn=128, layer=1, num_units=512)
    units = WhisperUnitTokenizer(cfg)
    if whisper:
        units.load_state_dict({**units.state_dict(), **whisper_base_encoder(layer)})
    units.centroids.copy_(torch.randn(512, cfg.d_model, generator=torch.Generator().manual_seed(0)))
    save_file({k: v.contiguous() for k, v in units.unit_state().items()}, str(work / "units.safetensors"))

    small = yaml.safe_load((ROOT / "recipes/configs/speechlm_stage1_small.yaml").read_text())["model"]["config"]
    lm_cfg = SpeechLMConfig.from_dict({**small, "architectures": ["MGMTTSForCausalLM"], "tokenizer_text_size": len(text),
                                       "vocab_size": len(text) + 4 * 514})
    (work / "speechlm").mkdir(exist_ok=True)
    lm_cfg.save(work / "speechlm" / "config.json")
    save_state_dict(random_speech_lm(lm_cfg, seed=1).state_dict(), work / "speechlm")

    flow_raw = yaml.safe_load((ROOT / "recipes/configs/flow_small.yaml").read_text())["model"]
    flow_raw["encoder"]["static_chunk_size"] = grid
    flow_raw["estimator"]["static_chunk_size"] = grid * flow_raw["token_mel_ratio"]
    flow_raw.update(n_timesteps=ode_steps, inference_cfg_rate=cfg_rate)
    flow_cfg = FlowConfig.from_dict(flow_raw)
    (work / "flow").mkdir(exist_ok=True)
    (work / "flow" / "flow_config.json").write_text(json.dumps(flow_cfg.to_dict()))
    flow = _randomise(CausalFlow(flow_cfg), 2)
    save_file({k: v.contiguous() for k, v in flow.state_dict().items()}, str(work / "flow" / "flow.safetensors"))
    sf.write(str(work / "voice.wav"), reference_clip(6.0).numpy(), 16000, subtype="FLOAT")
    parts = OwnMouthParts(speechlm=work / "speechlm", text=work / "text", units=work / "units.safetensors",
                          flow=work / "flow", voice_audio=work / "voice.wav", voice_text=SENTENCES[0])
    return assemble_own_mouth(out, parts, max_bytes=10**9)


def timed(fn, reps: int = 1) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(root: Path, seconds: float, text: str = "The birch canoe slid on the smooth planks. Glue the sheet "
            "to the dark blue background.", first_piece: int | None = -1, repeats: int = 3) -> dict:
    """``first_piece``: the stack's ``first_piece_frames`` (-1: the mouth's own; None: a whole piece).
    The prefilled pipeline numbers are the median of ``repeats`` syntheses."""
    import dataclasses

    from mgm_omni.generation.pipeline import TTSPipeline
    from mgm_omni.generation.wave.hop_vocoder import HopVocoder
    from mgm_omni.generation.wave.regulated_flow import GridFlowStream, grid_mel

    rows = int(seconds * 25 / 4) + 8
    pipe = TTSPipeline.load(root, temperature=0.0, max_rows=rows)
    if first_piece != -1 and hasattr(pipe.token2wav, "config"):
        pipe.token2wav.config = dataclasses.replace(pipe.token2wav.config, first_piece_frames=first_piece)
    pipe.synthesize("Warm up.")
    pipe.token2wav._prefilled.clear()  # the voice's prompt not prefilled yet: its first stream renders it
    cold = pipe.synthesize(text).first_packet_seconds
    # the prompt's whole chunks prefilled once, shared by every later stream
    runs = sorted((pipe.synthesize(text) for _ in range(repeats)), key=lambda r: r.first_packet_seconds)
    res = runs[len(runs) // 2]
    rtfs = sorted((r.lm_seconds + r.vocoder_seconds) / r.audio_seconds for r in runs)
    out = {"audio_s": res.audio_seconds, "first_audio_s": res.first_packet_seconds, "first_audio_cold_s": cold,
           "rtf": rtfs[len(rtfs) // 2], "lm_s_per_audio_s": res.lm_seconds / res.audio_seconds,
           "first_audio_all_s": [round(r.first_packet_seconds, 3) for r in runs]}
    t2w, voice = pipe.token2wav, pipe.voice
    tokens = torch.randint(0, pipe.token2wav.flow.config.vocab_size, (int(seconds * 25),),
                           generator=torch.Generator().manual_seed(0)).tolist()
    grid = t2w.grid
    look = t2w.flow.config.pre_lookahead_len

    def stream_flow():
        s = GridFlowStream(t2w.flow, grid, voice.tokens, voice.mel, voice.xvector, 8)
        pos, hop = 0, grid.chunk - voice.n_tokens % grid.chunk or grid.chunk
        while len(tokens) - pos > hop + look:
            s.render(tokens[pos:pos + hop], tokens[pos + hop:pos + hop + look])
            pos, hop = pos + hop, grid.chunk
        s.render(tokens[pos:], final=True)

    with torch.inference_mode():
        mel = grid_mel(t2w.flow, grid, voice.tokens, voice.mel, voice.xvector, tokens)
    out["flow_offline_s_per_audio_s"] = timed(lambda: grid_mel(t2w.flow, grid, voice.tokens, voice.mel,
                                                               voice.xvector, tokens)) / seconds
    out["flow_stream_s_per_audio_s"] = timed(stream_flow) / seconds
    hop_frames = grid.frames(grid.chunk)

    def hop_vocoder():
        v = HopVocoder(t2w.vocoder, 12, 12)
        for a in range(0, mel.shape[2], hop_frames):
            v.push(mel[:, :, a:a + hop_frames], final=a + hop_frames >= mel.shape[2])

    out["vocoder_one_call_s_per_audio_s"] = timed(lambda: t2w.vocoder.vocode(mel)) / seconds
    out["vocoder_hops_s_per_audio_s"] = timed(hop_vocoder) / seconds
    return out


def report(title: str, m: dict) -> None:
    """Print one mouth's measurements."""
    print(f"\n{title}: pipeline first audio {m['first_audio_s']:.3f} s (median of {m['first_audio_all_s']}) "
          f"(prompt prefilled) vs {m['first_audio_cold_s']:.3f} s (not: "
          f"x{m['first_audio_cold_s'] / m['first_audio_s']:.1f}), RTF {m['rtf']:.3f} ({m['audio_s']:.1f} s of audio)")
    print(f"  per audio second: SpeechLM {m['lm_s_per_audio_s']:.3f} s; flow stream "
          f"{m['flow_stream_s_per_audio_s']:.3f} s vs one pass {m['flow_offline_s_per_audio_s']:.3f} s "
          f"(x{m['flow_stream_s_per_audio_s'] / m['flow_offline_s_per_audio_s']:.2f}); HiFi-GAN hops "
          f"{m['vocoder_hops_s_per_audio_s']:.3f} s vs one call {m['vocoder_one_call_s_per_audio_s']:.3f} s "
          f"(x{m['vocoder_hops_s_per_audio_s'] / m['vocoder_one_call_s_per_audio_s']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[25, 10])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ode-steps", type=int, default=10, help="flow Euler steps (CosyVoice2: 10)")
    parser.add_argument("--cfg-rate", type=float, default=0.7, help="classifier-free guidance (0: one branch)")
    parser.add_argument("--random-units", action="store_true", help="a tiny random unit encoder (no Whisper wheels)")
    parser.add_argument("--model", default=None, help="measure this mouth directory instead of random builds")
    parser.add_argument("--first-pieces", type=int, nargs="+", default=[-1],
                        help="with --model: stack first_piece_frames values to measure (-1: the mouth's own, "
                             "0: a whole piece)")
    parser.add_argument("--vocoder-dtypes", nargs="+", default=["float32", "auto"],
                        choices=["float32", "bfloat16", "auto"],
                        help="with --model: the vocoder precisions to measure (auto: the one chosen for this machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"{describe_cpu()}; {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; "
          f"{args.seconds:g} s of audio per measurement" + ("" if args.model else
                                                           f"; flow: {args.ode_steps} steps, CFG {args.cfg_rate:g}"))
    if args.model is not None:
        results = {}
        for dtype in args.vocoder_dtypes:  # each load chooses the vocoder's precision anew (vocoder_choice)
            if dtype == "auto":
                os.environ.pop("MGM_OMNI_VOCODER_DTYPE", None)
            else:
                os.environ["MGM_OMNI_VOCODER_DTYPE"] = dtype
            for piece in args.first_pieces:
                m = measure(Path(args.model), args.seconds, first_piece=None if piece == 0 else piece)
                results.setdefault(dtype, m)
                report(f"mouth {args.model}, vocoder {dtype}, first vocoder call "
                       f"{'whole piece' if piece == 0 else 'as the mouth says' if piece == -1 else f'{piece} frames'}",
                       m)
        if len(results) > 1:
            base, *rest = args.vocoder_dtypes
            for dtype in rest:
                a, b = results[base], results[dtype]
                print(f"vocoder {dtype} vs {base}, same process: RTF x{a['rtf'] / b['rtf']:.2f} faster, first audio "
                      f"x{a['first_audio_s'] / b['first_audio_s']:.2f}, HiFi-GAN hops "
                      f"x{a['vocoder_hops_s_per_audio_s'] / b['vocoder_hops_s_per_audio_s']:.2f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for grid in args.grids:
            root = build_mouth(Path(tmp) / f"mouth{grid}", grid, not args.random_units, args.ode_steps, args.cfg_rate)
            report(f"flow chunk {grid} tokens ({grid * 40} ms)", measure(root, args.seconds))
            np.random.seed(0)


if __name__ == "__main__":
    main()
