"""Omni generation: the lock-step rules (waiting on an empty buffer, audio_end only after the MLLM, blank-run
limit 10, chunks closing mid-reply), the ordered event stream end to end on tiny models (text pieces, audio
through token2wav), separate text/speech sampling, multi-turn history keeping first-turn media, and the
audio track of a video spliced as audio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from media_files import write_video

from mgm_omni.generation.speech.chunk_state import AbortCause, RowKind
from mgm_omni.generation.speech.chunked_decode import DecodeConfig
from mgm_omni.generation.mllm.runner import MLLM, TextDecodeConfig, TextDetokenizer, TextStep
from mgm_omni.generation.omni import (
    AudioEvent,
    OmniChat,
    OmniReply,
    OmniSettings,
    SpeechTrack,
    TextEvent,
    lockstep,
)
from mgm_omni.generation.sampling import SamplingConfig
from mgm_omni.generation.speech.prompt import PromptRows, SpecialIds
from mgm_omni.generation.speech.token_stream import vocoder_tokens
from mgm_omni.models.omni_lm import OmniInputError
from mgm_omni.hub.tiny_brain import tiny_omni_config, write_omni_dir
from mgm_omni.text import BPEFrontEnd, Tokenizer

IDS = SpecialIds(pad_text=151643, eos_text=151645, audio_start=151669, audio_end=151670, audio_sep=151671,
                 speech_eos=6561, speech_pad=6562)
GREEDY = SamplingConfig(temperature=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    from mgm_omni.hub.tiny_mouth import BuiltinModelError

    root = tmp_path_factory.mktemp("omni")
    try:  # 1 s audio windows keep the tiny tower fast; the built-in model uses real 30 s windows
        return write_omni_dir(root / "m", tiny_omni_config(), seed=11, window_positions=50)
    except BuiltinModelError as exc:  # the Qwen3 tokenizer package is missing
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tokenizer(omni_dir):
    return Tokenizer.from_dir(omni_dir)


@pytest.fixture(scope="module")
def mllm(omni_dir):
    return MLLM.from_pretrained(omni_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mgm-cache")


@pytest.fixture(scope="module")
def mouth(cache_dir):
    """The tiny SpeechLM, its token2wav and the voice it ships."""
    from mgm_omni.generation.pipeline import load_mouth
    from mgm_omni.generation.voice import shipped_voice
    from mgm_omni.hub.tiny_mouth import ensure_tiny_random

    root = ensure_tiny_random(cache_dir)
    voice = shipped_voice(root)
    return *load_mouth(root), voice, voice.text


class StubRunner:
    """A SpeechLM stand-in that always predicts the same 4 codes (so the schedule alone decides the rows)."""

    num_slots = 4

    def __init__(self, codes):
        self.logits = torch.full((1, 4, 6563), -10.0)
        self.logits[0, torch.arange(4), torch.tensor(codes)] = 10.0

    def start(self, prompts):
        return self.logits

    def step(self, rows):
        return self.logits

    def room(self, index):
        return True

    def reset(self):
        pass


def scripted(ids, tokenizer):
    """MLLM decode steps for a fixed reply, then the eos step (as ``text_stream`` yields them)."""
    detok = TextDetokenizer(tokenizer)
    for t in ids:
        yield TextStep(t, detok.push(t))
    yield TextStep(IDS.eos_text, detok.flush(), "eos")


def run_stub(ids, tokenizer, codes, max_rows=400):
    track = SpeechTrack(StubRunner(codes), PromptRows(torch.zeros(1, 5, dtype=torch.long)), IDS,
                        BPEFrontEnd(tokenizer), DecodeConfig(GREEDY, max_new_rows=max_rows))
    reply = OmniReply()
    events = list(lockstep(scripted(ids, tokenizer), track, reply=reply))
    return reply, events


EOS = [6561] * 4


def test_reply_opening_with_markdown_waits_instead_of_crashing(tokenizer):
    ids = tokenizer.encode("**Hello** world, fine.")
    assert tokenizer.decode(ids[:1]) == "**"
    reply, events = run_stub(ids, tokenizer, EOS)
    res = reply.speech
    text_rows = [r[0] for r, k in zip(res.rows, res.kinds) if k is RowKind.TEXT]
    assert text_rows == ids[1:]  # the leading ** is skipped at the chunk start, nothing else is
    assert reply.waits == 1  # the first iteration had only "**" to voice: the speech track waited
    assert res.kinds[-4:] == [RowKind.TEXT, RowKind.CLOSE, RowKind.SEP, RowKind.END]
    assert res.rows[-2][0] == IDS.audio_end and res.finish_reason == "end" and not res.tts_error
    assert "".join(e.text for e in events) == reply.text == "**Hello** world, fine."


def test_chunk_ends_mid_reply_with_sep_and_audio_end_only_at_the_end(tokenizer):
    words = " ".join(f"w{i}" for i in range(40))
    ids = tokenizer.encode(words + ". And then some more words follow here.")
    reply, _ = run_stub(ids, tokenizer, EOS)
    res = reply.speech
    seps = [r[0] for r, k in zip(res.rows, res.kinds) if k is RowKind.SEP]
    assert seps == [IDS.audio_sep, IDS.audio_end]  # the first chunk closed while the MLLM was still writing
    first = res.kinds.index(RowKind.SEP)
    assert sum(k is RowKind.TEXT for k in res.kinds[:first]) > 50  # it closed at the sentence end after 50 ids
    assert [r[0] for r, k in zip(res.rows, res.kinds) if k is RowKind.TEXT] == ids  # every id voiced, in order
    # Text arrives and is voiced at 1 id per iteration, so the 2 ids that queued during the CLOSE and SEP
    # rows stay ahead: no waiting, and exactly 5 rows besides the text rows.
    assert reply.waits == 0 and len(res.rows) == len(ids) + 5


def test_blank_run_limit_is_ten_in_omni_mode(tokenizer):
    ids = tokenizer.encode("One two three")
    assert len(ids) == 3
    reply, _ = run_stub(ids, tokenizer, [6486] * 4)  # a blank code in every slot
    res = reply.speech
    assert [a.cause for a in res.aborts] == [AbortCause.BLANK_RUN]
    assert res.aborts[0].row == 10  # blank_run 11 > 10 (TTS mode aborts at 9 > 8)
    assert res.kinds[3] is RowKind.PAD  # MLLM finished, buffer empty: PAD started on that row
    assert res.rows[-2][0] == IDS.audio_end


def test_whitespace_only_reply_closes_without_error(tokenizer):
    ids = tokenizer.encode("\n\n  **")
    reply, events = run_stub(ids, tokenizer, EOS)
    res = reply.speech
    assert res.kinds == [RowKind.CLOSE, RowKind.SEP, RowKind.END] and not res.tts_error
    assert reply.waits == len(ids)
    assert not any(isinstance(e, AudioEvent) for e in events)


def test_speech_row_limit_lets_the_text_finish(tokenizer):
    ids = tokenizer.encode("A reply that is longer than the speech budget allows.")
    reply, events = run_stub(ids, tokenizer, [100, 200, 300, 400], max_rows=5)
    assert reply.speech.finish_reason == "max_rows" and len(reply.speech.rows) == 5
    assert reply.text_ids == ids and reply.text_finish == "eos"
    assert "".join(e.text for e in events) == tokenizer.decode(ids)


def test_end_to_end_event_stream(mllm, mouth):
    speech, token2wav, reference, reference_text = mouth
    settings = OmniSettings(text=TextDecodeConfig(GREEDY, max_new_tokens=40),
                            speech=DecodeConfig(GREEDY, max_new_rows=60))
    chat = OmniChat(mllm, speech, token2wav, reference, reference_text, settings)
    events = list(chat.ask("Tell me a story."))
    reply = chat.last
    kinds = ["T" if isinstance(e, TextEvent) else "A" for e in events]
    last_text = max(i for i, k in enumerate(kinds) if k == "T")
    assert "A" in kinds[:last_text]  # audio arrives while the MLLM is still writing
    assert "".join(e.text for e in events if isinstance(e, TextEvent)) == reply.text
    assert reply.text == mllm.tokenizer.decode(reply.text_ids) and len(reply.text_ids) == 40
    assert max(reply.text_ids) < 151665  # ids the SpeechLM text column shares with the MLLM
    audio = np.concatenate([e.samples for e in events if isinstance(e, AudioEvent)])
    assert np.array_equal(audio, reply.audio)
    res = reply.speech
    assert len(res.rows) == 60 and res.finish_reason == "max_rows"
    assert audio.shape[0] == len(vocoder_tokens(res.rows, speech.ids, 4)) * 960 > 0
    text_rows = [r[0] for r, k in zip(res.rows, res.kinds) if k is RowKind.TEXT]
    assert text_rows == reply.text_ids[: len(text_rows)]  # the SpeechLM voices the MLLM's ids in order
    assert reply.first_audio_seconds is not None and reply.first_audio_seconds < reply.seconds


def test_text_and_speech_sample_separately(mllm, mouth):
    speech, _, reference, reference_text = mouth
    text = TextDecodeConfig(SamplingConfig(temperature=1.0), max_new_tokens=12, seed=3)
    replies = []
    for speech_t in (0.0, 1.0):
        settings = OmniSettings(text=text, speech=DecodeConfig(SamplingConfig(temperature=speech_t), max_new_rows=16,
                                                               seed=5))
        replies.append(OmniChat(mllm, speech, None, reference, reference_text, settings).say("Hi."))
    assert replies[0].text_ids == replies[1].text_ids  # the speech temperature does not touch the text
    assert replies[0].speech.rows != replies[1].speech.rows


def test_multi_turn_history_keeps_first_turn_media(mllm):
    chat = OmniChat(mllm, settings=OmniSettings(text=TextDecodeConfig(GREEDY, max_new_tokens=6)))
    wave = 0.1 * torch.randn(24000, generator=torch.Generator().manual_seed(1))  # 1.5 s -> 2 windows
    first = chat.say("What is said?", audio=wave)
    audio_span = chat.last_prompt.spans[0]
    features = chat.last_prompt.embeds[0, audio_span.start:audio_span.stop].clone()
    assert audio_span.kind == "audio" and audio_span.length == 10
    chat.say("And then?")
    (span,) = chat.last_prompt.spans
    assert (span.kind, span.start, span.length) == ("audio", audio_span.start, 10)
    assert torch.equal(chat.last_prompt.embeds[0, span.start:span.stop], features)
    assert [t.role for t in chat.turns] == ["user", "assistant", "user", "assistant"]
    assert chat.turns[1].content == first.text
    ids = mllm.prompt_ids([(t.role, t.content) for t in chat.turns[:3]])
    assert chat.last_prompt.length == len(ids) - 1 + 10
    chat.reset()
    chat.say("Fresh start.")
    assert chat.last_prompt.spans == []


SHORT = dict(n_frames=8, fps=4, size=(56, 56))  # 2 s


def test_video_audio_track_is_spliced_as_audio(mllm, tmp_path):
    chat = OmniChat(mllm, settings=OmniSettings(text=TextDecodeConfig(GREEDY, max_new_tokens=3)))
    from mgm_omni.generation.mllm.vision_inputs import video_audio_track

    path = write_video(tmp_path / "a.mp4", **SHORT, audio=True)
    turn = chat.user_turn("What happens?", video=path)
    assert [m.kind for m in turn.media] == ["visual", "audio"]
    assert "<image>" in turn.content and "<speech>" in turn.content
    seconds = video_audio_track(str(path)).shape[0] / 16000  # about 2 s (AAC adds a little)
    assert turn.media[1].embeddings.shape[0] == 5 * math.ceil(seconds) >= 10  # 5 tokens per 1 s window
    chat.say("What happens?", video=write_video(tmp_path / "b.mp4", **SHORT, audio=True))
    assert [s.kind for s in chat.last_prompt.spans] == ["visual", "audio"]
    silent = chat.user_turn("What happens?", video=write_video(tmp_path / "c.mp4", **SHORT))
    assert [m.kind for m in silent.media] == ["visual"] and "<speech>" not in silent.content


def test_image_is_encoded_and_spliced(mllm):
    from PIL import Image

    from mgm_omni.generation.mllm.vision_inputs import preprocess_image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    chat = OmniChat(mllm, settings=OmniSettings(text=TextDecodeConfig(GREEDY, max_new_tokens=3)))
    chat.say("What is this?", image=image)
    (span,) = chat.last_prompt.spans
    t, h, w = span.grid_thw
    assert span.kind == "visual" and span.length == t * (h // 2) * (w // 2)
    expected = mllm.encode_visual(preprocess_image(image, mllm.vision_preprocess))[0].embeddings
    assert torch.equal(chat.last_prompt.embeds[0, span.start:span.stop], expected)
    assert chat.last_prompt.rope_delta == max(t, h // 2, w // 2) - span.length  # the image takes fewer positions


def test_cli_transcribe_and_chat_on_the_builtin_models(mouth, cache_dir, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    from mgm_omni.cli import main

    monkeypatch.setenv("MGM_OMNI_CACHE", str(cache_dir))
    wav = tmp_path / "q.wav"
    sf.write(str(wav), 0.1 * np.sin(np.arange(32000) / 5.0).astype(np.float32), 16000)
    assert main(["transcribe", str(wav), "--model", "tiny-random", "--max-new-tokens", "4"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "tiny RANDOM" in err and "150 audio tokens -> 4 text tokens" in err  # one 30 s window
    reply_wav = tmp_path / "r.wav"
    args = ["chat", "--model", "tiny-random", "--speechlm", "tiny-random", "-m", "Hi", "-m", "More?", "--max-new-tokens", "6", "--max-rows", "24", "--out", str(reply_wav)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.count("assistant: ") == 2 and err.count("6 tokens in") == 2
    wave, sr = sf.read(str(reply_wav))
    assert sr == 24000 and wave.shape[0] > 0
    assert main(["chat", "--video-file", str(tmp_path / "none.mp4")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bad_input(mllm, mouth):
    speech = mouth[0]
    with pytest.raises(OmniInputError, match="reference voice"):
        OmniChat(mllm, speech)
    chat = OmniChat(mllm)
    with pytest.raises(OmniInputError, match="image or a video"):
        chat.user_turn("x", image=b"1", video=b"2")
    from mgm_omni.text import PromptError

    with pytest.raises(PromptError, match="empty user turn"):
        chat.say("  ")
