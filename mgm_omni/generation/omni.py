"""Omni generation: the MLLM's text streams into the SpeechLM in lock-step (spec §2.7, §4.7).

    chat = OmniChat(mllm, speech=generator, token2wav=t2w, reference=voice)
    for event in chat.ask("What is in this picture?", image="cat.jpg"):
        if isinstance(event, TextEvent): print(event.text, end="")
        else: play(event.samples)                      # audio chunks while the text is still coming
    chat.last.text, chat.last.audio                    # the whole reply; chat.ask(...) again continues

One loop, two KV caches. Each iteration makes one MLLM decode step (its id joins the SpeechLM text buffer
unless it is the eos), then one SpeechLM step under the chunk schedule in omni mode: a chunk does not end
because the buffer is empty while the MLLM runs, ``<|audio_end|>`` only once it has finished and the buffer
is empty, blank-run limit 10. When the buffer holds nothing to voice yet (e.g. a reply opening with ``**``,
whose ids are skipped at a chunk start) the SpeechLM step waits for the next MLLM id instead of crashing
(the official IndexError, spec §2.9 #4). Text and speech sample with separate settings (spec §2.9 #7); MLLM
ids >= 151665 are masked so they can never collide with SpeechLM-only tokens. Every reply gets a fresh
SpeechLM context; the MLLM keeps the whole conversation, media included, and re-reads it every turn.
The SpeechLM steps with the same row step as TTS decoding (``chunk_state.step_row``) and its rows become
audio through the same speech stream (``speech_stream.SpeechStream``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mgm_omni.generation.speech.chunk_state import ChunkRules, ChunkState, RowEvent, step_row
from mgm_omni.generation.speech.chunked_decode import DecodeConfig, SpeechResult
from mgm_omni.generation.mllm.runner import MLLM, SHARED_TEXT_IDS, TextDecodeConfig, TextStep
from mgm_omni.generation.mllm.text_bridge import TextBridge
from mgm_omni.generation.sampling import mark_seen, sample
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds, omni_prompt_rows
from mgm_omni.generation.speech_stream import SpeechStream
from mgm_omni.generation.voice import Voice
from mgm_omni.generation.wave.token2wav import ReferencePrompt, StreamSchedule, Token2Wav
from mgm_omni.models.omni_lm import MediaFeatures, OmniInputError
from mgm_omni.text import mllm_user_content

OMNI_MAX_ROWS = 4096  # the official omni CLI and demo: about 10.9 min of speech per reply


@dataclass(frozen=True)
class OmniSettings:
    """Both tracks' settings; ``None`` takes the model's own (from its ``generation_config.json``), with at
    most 4096 speech rows per reply as the official omni loop. ``speech.max_new_rows`` bounds the spoken
    part; the text mask of ids >= 151665 is always applied."""

    text: TextDecodeConfig | None = None
    speech: DecodeConfig | None = None
    schedule: StreamSchedule | None = None


@dataclass(frozen=True)
class TextEvent:
    """A piece of the reply's text (whole characters) and the MLLM id that completed it."""

    text: str
    token: int


@dataclass(frozen=True)
class AudioEvent:
    """A chunk of the spoken reply, float32 mono at ``sample_rate`` (the mouth's)."""

    samples: np.ndarray
    sample_rate: int


@dataclass
class OmniReply:
    """One reply: text and its ids, SpeechLM rows (with chunk aborts), audio, and timings in seconds."""

    text: str = ""
    text_ids: list[int] = field(default_factory=list)
    text_finish: str | None = None
    speech: SpeechResult | None = None
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    waits: int = 0  # iterations where the SpeechLM waited for text
    first_text_seconds: float | None = None
    first_audio_seconds: float | None = None
    seconds: float = 0.0

    @property
    def tts_error(self) -> bool:
        return self.speech is not None and self.speech.tts_error


class SpeechTrack:
    """The SpeechLM side of one spoken reply, its text buffer fed live by the MLLM.

    Args:
        runner: model state (``start``/``step``/``room``/``reset``/``num_slots``, e.g. ``SpeechLMRunner``).
        prompt: the omni prefill (ends at the assistant ``<|audio_start|>``, empty buffer).
        ids, text: special ids and the SpeechLM's text front-end.
        config: speech sampling, row limit, seed; limits: ``config.rules``, else ``rules``, else the
            release's omni limits for the runner's k.
    """

    def __init__(self, runner, prompt: PromptRows, ids: SpecialIds, text, config: DecodeConfig,
                 rules: ChunkRules | None = None) -> None:
        self.runner, self.ids, self.config = runner, ids, config
        k = runner.num_slots
        rules = config.rules or rules or ChunkRules.for_slots(k, omni=True)
        self.state = ChunkState([], ids, rules, text, k, text_final=False)
        self.result = SpeechResult()
        self.finished = False
        self.logits = runner.start([prompt.rows])  # (1, k, S)
        device = self.logits.device
        self.generator = (torch.Generator(device=device).manual_seed(config.seed)
                          if config.seed is not None else None)
        self.seen = (torch.zeros(k, self.logits.shape[-1], dtype=torch.bool, device=device)
                     if config.sampling.repetition_penalty != 1.0 else None)

    @classmethod
    def for_generator(cls, generator, prompt: PromptRows, config: DecodeConfig) -> SpeechTrack:
        """A track on a :class:`~mgm_omni.generation.speech.generator.SpeechGenerator`'s model, text front-end
        and mouth (its omni limits)."""
        runner = generator.runner(max_rows=config.max_cache_rows, initial_rows=config.initial_cache_rows or 512)
        return cls(runner, prompt, generator.ids, generator.text, config,
                   ChunkRules.for_mouth(generator.mouth, omni=True))

    def push_text(self, token: int) -> None:
        self.state.push_text([token])

    def finish_text(self) -> None:
        self.state.finish_text()

    def ready(self) -> bool:
        """A row can be made now (False while waiting for text, and once finished)."""
        return not self.finished and self.state.ready()

    def step(self) -> RowEvent:
        """Sample and append one row (the shared row step); the event, for the speech stream."""
        size = self.logits.shape[-1]
        picked = sample(self.logits.reshape(-1, size), self.config.sampling, self.seen, self.generator).tolist()
        event = step_row(self.state, picked, 0, len(self.result.rows), self.config.max_new_rows, self.runner.room(0))
        self.result.add(event)
        if event.finish_reason is not None:
            self.finished = True
            self.runner.reset()
            return event
        row = torch.tensor([event.row], dtype=torch.long)  # (1, 1 + k)
        if self.seen is not None:
            mark_seen(self.seen, row[0, 1:].to(self.seen.device))
        self.logits = self.runner.step(row)
        return event


def lockstep(text_steps: Iterator[TextStep], track: SpeechTrack | None = None, speech: SpeechStream | None = None,
             reply: OmniReply | None = None, bridge: TextBridge | None = None, sample_rate: int = 0,
             keep_audio: bool = True) -> Iterator[TextEvent | AudioEvent]:
    """Run the MLLM text stream and the speech track together, yielding one ordered event stream.

    Args:
        text_steps: MLLM decode steps (:func:`~mgm_omni.generation.mllm.runner.text_stream`), one per iteration.
        track: the SpeechLM side (``None``: text only).
        speech: the rows' speech stream (rows -> tokens -> audio); ``None``: rows only, no audio.
        reply: filled in as the loop runs (text, ids, speech rows, audio, timings).
        bridge: MLLM ids -> SpeechLM ids (``None``: unchanged, the official tokenizers share ids).
        sample_rate: of the audio events (the mouth's).
        keep_audio: gather the audio into ``reply.audio`` (False: a caller that writes the events as they
            come; memory then stays flat in the reply's length).
    """
    reply = reply if reply is not None else OmniReply()
    bridge = bridge if bridge is not None else TextBridge()
    start, pieces, chunks = time.perf_counter(), [], []
    text_running = True

    def audio(samples: np.ndarray) -> AudioEvent:
        if reply.first_audio_seconds is None:
            reply.first_audio_seconds = time.perf_counter() - start
        if keep_audio:
            chunks.append(samples)
        return AudioEvent(samples, sample_rate)

    while True:
        if text_running:
            step = next(text_steps, None)
            if step is None:  # a source that ends without a final step counts as finished
                step = TextStep(-1, "", "eos")
            if step.finish_reason != "eos":
                reply.text_ids.append(step.token)
                if track is not None:
                    for token in bridge.push(step.token, step.text):
                        track.push_text(token)
            if step.text:
                if reply.first_text_seconds is None:
                    reply.first_text_seconds = time.perf_counter() - start
                pieces.append(step.text)
                yield TextEvent(step.text, step.token)
            if step.finished:
                text_running, reply.text_finish = False, step.finish_reason
                if track is not None:
                    for token in bridge.finish(step.text if step.finish_reason == "eos" else ""):
                        track.push_text(token)
                    track.finish_text()
        if track is None or track.finished:
            if not text_running:
                break
            continue  # the speech track ended (row limit): the text still completes
        if not track.ready():
            reply.waits += 1  # nothing to voice yet: wait for the next MLLM id (spec §2.9 #4)
            continue
        event = track.step()
        if speech is not None:
            for samples in speech.push_iter(event):
                yield audio(samples)
    if speech is not None and track is not None:
        for samples in speech.finish():
            yield audio(samples)
    reply.text = "".join(pieces)
    reply.speech = track.result if track is not None else None
    reply.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    reply.seconds = time.perf_counter() - start


@dataclass
class Turn:
    role: str
    content: str
    media: list[MediaFeatures] = field(default_factory=list)


class OmniChat:
    """A multi-turn conversation with an MLLM whose replies are spoken by a SpeechLM.

    Args:
        mllm: the understanding model.
        speech: a :class:`~mgm_omni.generation.speech.generator.SpeechGenerator` (``None``: text replies only).
        token2wav: renders speech tokens (``None``: rows and tokens only, no audio).
        reference: the :class:`~mgm_omni.generation.voice.Voice` to speak in (a bare flow prompt takes its
            transcript from ``reference_text``).
        settings: text and speech settings (default: each model's own, see :class:`OmniSettings`).
    """

    def __init__(self, mllm: MLLM, speech=None, token2wav: Token2Wav | None = None,
                 reference: Voice | ReferencePrompt | None = None, reference_text: str = "",
                 settings: OmniSettings | None = None) -> None:
        self.mllm, self.speech, self.token2wav = mllm, speech, token2wav
        if reference is not None and (reference_text or not isinstance(reference, Voice)):
            reference = Voice(reference.tokens, reference.mel, reference.xvector, text=reference_text)
        self.voice: Voice | None = reference
        settings = settings or OmniSettings()
        text = settings.text or mllm.config
        # Another brain tokenizer: its text is re-encoded for the mouth, and its own ids are never masked.
        self.bridge = TextBridge.between(mllm.tokenizer, speech.tokenizer) if speech is not None else TextBridge()
        if text.mask_from is None and self.bridge.identity:
            text = replace(text, mask_from=SHARED_TEXT_IDS)
        speech_cfg = settings.speech
        if speech_cfg is None and speech is not None:
            speech_cfg = replace(speech.config, max_new_rows=min(speech.config.max_new_rows, OMNI_MAX_ROWS))
        self.settings = replace(settings, text=text, speech=speech_cfg)
        self.speech_prompt: PromptRows | None = None
        if speech is not None:
            if reference is None:
                raise OmniInputError("a spoken chat needs a reference voice "
                                     "(its S3 tokens condition the SpeechLM)")
            # Built once: the voice prompt is the same for every reply, each reply gets a fresh context.
            self.speech_prompt = omni_prompt_rows(speech.text, speech.cfg, reference.text, reference.reference_tokens,
                                                  speech.prompt_config, speech.mouth.delay_rows)
        self.turns: list[Turn] = []
        self.last: OmniReply | None = None
        self.last_prompt = None

    def reset(self) -> None:
        """Forget the conversation (media included)."""
        self.turns, self.last, self.last_prompt = [], None, None

    def user_turn(self, text: str = "", audio=None, image=None, video=None) -> Turn:
        """The user turn for this input: content with placeholders and its encoded media, in placeholder order.

        ``audio``: 16 kHz mono samples or ready ``MediaFeatures``; ``image``/``video``: a path, bytes (a PIL
        image too for images) or ready features. A video's audio track is heard as audio when the video has
        one and no separate ``audio`` is given.
        """
        if image is not None and video is not None:
            raise OmniInputError("give an image or a video in one turn, not both")
        media: list[MediaFeatures] = []
        if image is not None:
            media.append(image if isinstance(image, MediaFeatures) else self.mllm.encode_image(image))
        if video is not None:
            if isinstance(video, MediaFeatures):
                media.append(video)
            else:
                frames, track = self.mllm.encode_video(video, with_audio=audio is None)
                media.append(frames)
                audio = track if track is not None else audio
        if audio is not None:
            if not isinstance(audio, MediaFeatures):
                audio = self.mllm.encode_audio(torch.as_tensor(audio))
            media.append(audio)
        content = mllm_user_content(text, image=image is not None, video=video is not None,
                                    speech=any(m.kind == "audio" for m in media))
        return Turn("user", content, media)

    def ask(self, text: str = "", audio=None, image=None, video=None, speak: bool = True,
            keep_audio: bool = True) -> Iterator[TextEvent | AudioEvent]:
        """Add a user turn and stream the reply; ``self.last`` holds it when the stream ends (its audio
        too, unless ``keep_audio`` is False)."""
        user = self.user_turn(text, audio, image, video)
        turns = self.turns + [user]
        prompt = self.mllm.prompt([(t.role, t.content) for t in turns], [m for t in turns for m in t.media])
        self.last_prompt = prompt
        text_steps = self.mllm.stream(prompt, self.settings.text)
        track = speech = None
        if speak and self.speech is not None:
            mouth = self.speech.mouth
            track = SpeechTrack.for_generator(self.speech, self.speech_prompt, self.settings.speech)
            if self.token2wav is not None:
                schedule = self.settings.schedule or StreamSchedule(grid=mouth.stream_grid, first_hop=mouth.first_hop)
                speech = SpeechStream(self.token2wav, self.voice, self.speech.token_stream(), schedule,
                                      seed=self.settings.speech.seed)
        reply = OmniReply()
        self.last = reply
        self.bridge.reset()
        rate = self.speech.mouth.sample_rate if self.speech is not None else 0
        yield from lockstep(text_steps, track, speech, reply, self.bridge, rate, keep_audio)
        self.turns = turns + [Turn("assistant", reply.text)]

    def say(self, text: str = "", **kwargs) -> OmniReply:
        """``ask`` run to completion."""
        for _ in self.ask(text, **kwargs):
            pass
        return self.last

