"""Omni re-tokenisation: two different tiny tokenizers, streamed brain text -> the mouth's ids of the whole text."""

from __future__ import annotations

import pytest
from tokenizers import AddedToken, pre_tokenizers

from mgm_omni.generation.mllm.runner import TextDetokenizer, TextStep
from mgm_omni.generation.mllm.text_bridge import TextBridge, same_text_ids
from mgm_omni.text import Tokenizer
from mgm_omni.text.tokenizer import build_qwen_bpe

ENGLISH = "The cat sat on the mat.  Then the  cat\n\nslept, twice!"
CHINESE = "你好，世界。今天天气很好！我们去公园吧"
BRAIN_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "Ġc a", "Ġca t", "a t", "Ġ s", "Ġs at", "Ġ m", "Ġm at", "e n"]
MOUTH_MERGES = ["t h", "th e", "Ġ the", "c a", "ca t", "Ġ cat", "Ġ sat", "Ġ on", "Ġ t", "Ġt w", "Ġtw i", "e d"]


def _tokenizer(merges: list[str], reverse: bool) -> Tokenizer:
    pieces = [tuple(m.split(" ")) for m in merges]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), reverse=reverse)
    vocab = {tok: i for i, tok in enumerate(alphabet)}
    for a, b in pieces:
        vocab.setdefault(a + b, len(vocab))
    valid = []
    for a, b in pieces:  # a merge needs both sides in the vocabulary
        if a in vocab and b in vocab:
            valid.append((a, b))
    backend = build_qwen_bpe(vocab, valid)
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_end|>")])
    return Tokenizer(backend)


@pytest.fixture(scope="module")
def pair() -> tuple[Tokenizer, Tokenizer]:
    return _tokenizer(BRAIN_MERGES, False), _tokenizer(MOUTH_MERGES, True)


def _brain_steps(brain: Tokenizer, text: str, eos: bool = True) -> list[TextStep]:
    """What the MLLM's text stream yields for ``text``: one step per id, whole characters only, then eos."""
    detok, ids = TextDetokenizer(brain), brain.encode(text)
    steps = [TextStep(i, detok.push(i)) for i in ids]
    if eos:
        steps.append(TextStep(brain.eos_token_id, detok.flush(), "eos"))
    return steps


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, ENGLISH + CHINESE])
def test_streamed_ids_equal_the_mouth_encoding_of_the_whole_text(pair, text):
    brain, mouth = pair
    assert brain.encode(text) != mouth.encode(text)  # the two tokenizers really differ
    bridge = TextBridge.between(brain, mouth)
    assert not bridge.identity
    out, released_early = [], 0
    steps = _brain_steps(brain, text)
    for n, step in enumerate(steps[:-1]):
        got = bridge.push(step.token, step.text)
        released_early += bool(got) and n < len(steps) - 2
        out += got
    out += bridge.finish(steps[-1].text)
    assert mouth.decode(out) == text
    assert out == mouth.encode(text)  # cuts fall where the mouth's pre-tokeniser cuts too
    assert released_early >= 3  # words stream: not everything waits for the end


def test_long_unbroken_run_is_released_at_max_pending(pair):
    brain, mouth = pair
    text = "天" * 30
    bridge = TextBridge(mouth, max_pending=8)
    out = []
    for step in _brain_steps(brain, text, eos=False):
        got = bridge.push(step.token, step.text)
        assert len(bridge.pending) < 8
        out += got
    out += bridge.finish()
    assert mouth.decode(out) == text


def test_identity_for_equal_tokenizers_and_the_official_pair(pair):
    brain, mouth = pair
    copy = _tokenizer(BRAIN_MERGES, False)
    bridge = TextBridge.between(brain, copy)
    assert bridge.identity and bridge.push(42, "whatever") == [42] and bridge.finish("x") == []
    assert not same_text_ids(brain, mouth)
    from mgm_omni.hub.tiny_brain import _write_tokenizer
    from mgm_omni.hub.tiny_mouth import BuiltinModelError, qwen_tokenizer_json

    try:
        qwen3 = Tokenizer.from_dir(qwen_tokenizer_json().parent)
    except BuiltinModelError as exc:
        pytest.skip(str(exc))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        _write_tokenizer(Path(d))  # the Qwen2.5 layout: Qwen3 less 4 added tokens
        qwen25 = Tokenizer.from_dir(d)
    assert same_text_ids(qwen25, qwen3)  # MLLM ids go unchanged into the SpeechLM (spec §2.7)
    assert not same_text_ids(qwen3, qwen25)  # the other way, 4 ids have no counterpart


class RecordingTrack:
    """A speech track that only records the text ids it is given."""

    def __init__(self):
        self.ids, self.finished, self.result = [], False, None

    def push_text(self, token):
        self.ids.append(token)

    def finish_text(self):
        self.finished = True

    def ready(self):
        return False


@pytest.mark.parametrize("identity", [True, False])
def test_lockstep_feeds_the_track_through_the_bridge(pair, identity):
    from mgm_omni.generation.omni import lockstep

    brain, mouth = pair
    track = RecordingTrack()
    bridge = TextBridge() if identity else TextBridge.between(brain, mouth)
    events = list(lockstep(iter(_brain_steps(brain, ENGLISH)), track, bridge=bridge))
    assert "".join(e.text for e in events) == ENGLISH
    assert track.ids == (brain.encode(ENGLISH) if identity else mouth.encode(ENGLISH))
    assert track.finished
