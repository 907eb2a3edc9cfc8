"""Phoneme BPE: ids layout, unseen words without unknowns, sentence ends, files, and the recipe's tokens/s check."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mgm_omni.text.errors import TokenizerError
from mgm_omni.text.g2p import G2PConfig, phoneme_string
from mgm_omni.text.phoneme_tokenizer import (
    PhonemeG2P,
    PhonemeTokenizer,
    base_vocab_size,
    symbol_table,
    units_to_string,
)
from mgm_omni.text.rules import is_sentence_end, is_skippable
from mgm_omni.text.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    ("en", "The birch canoe slid on the smooth planks.", 6),
    ("en", "Glue the sheet to the dark blue background.", 8),
    ("en", "The juice of lemons makes fine punch!", 7),
    ("en", "Is the box thrown beside the parked truck?", 8),
    ("en", "A large size in stockings is hard to sell; we know.", 10),
    ("zh", "今天天气很好，我们一起去公园散步吧。", 17),
    ("zh", "请把窗户关上，外面的风很大。", 13),
    ("zh", "他在图书馆里看了一下午的书。", 13),
]


@pytest.fixture(scope="module")
def g2p():
    return PhonemeG2P()


@pytest.fixture(scope="module")
def tok(g2p):
    return PhonemeTokenizer.train([g2p(text) for _, text, _ in SENTENCES] * 3, base_vocab_size() + 150)


def test_id_layout(tok):
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_end|>", "<|im_start|>")] == [0, 1, 2]
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    n = len(tok)
    assert base_vocab_size() < n <= base_vocab_size() + 150 and tok.vocab_size == n
    assert [tok.audio_start_id, tok.audio_end_id, tok.audio_sep_id] == [n - 3, n - 2, n - 1]
    with pytest.raises(TokenizerError):
        PhonemeTokenizer.train(["▁x"], base_vocab_size() - 1)


def test_unseen_text_round_trips_without_unknowns(tok, g2p):
    text = "Zorblaxian flimpertons, quixotically grooved! 龘鑫犇，量子纠缠？"
    ids = tok.encode(text)
    assert ids and all(0 <= i < len(tok) for i in ids)
    assert not set(ids) & {0, 1, 2, len(tok) - 3, len(tok) - 2, len(tok) - 1}
    # every symbol reached the ids: decoding gives back exactly the G2P's phonemes
    assert tok.decode(ids) == " " + phoneme_string(g2p.g2p(text))
    # a symbol outside the table is spelt by its characters; a character outside is an error
    spelt = units_to_string([("en:ˈɪ̃",)])
    assert len(spelt) == 1 + 3 and tok.decode(tok.tokenize(spelt)) == " ˈɪ̃"
    with pytest.raises(TokenizerError):
        units_to_string([("en:☃",)])


def test_sentence_ends_and_skippable_agree_with_the_text_rules(tok):
    ends = {tok.id_to_token(i) for i in tok.sentence_end_ids}
    assert ends == {".", "?", "!", ";"}
    ids = tok.encode("It is done. Really? 好的！")
    assert [tok.is_sentence_end(i) for i in ids].count(True) == 3 and tok.is_sentence_end(ids[-1])
    specials = {0, 1, 2, len(tok) - 3, len(tok) - 2, len(tok) - 1}
    for i in range(len(tok)):  # two paths: the cached id sets and the spec's rule on the decoded id
        text = tok.backend.decode([i], skip_special_tokens=False)  # the tokenizer.json decoder
        assert tok.decode([i]) == text
        assert tok.is_sentence_end(i) == (i not in specials and is_sentence_end(text))
        assert tok.is_skippable(i) == (i not in specials and is_skippable(text))
    assert {tok.id_to_token(i) for i in tok.skippable_ids} <= {"▁"}


def test_files_round_trip_and_the_qwen_loader_agrees(tok, g2p, tmp_path):
    tok.save(tmp_path)
    again = PhonemeTokenizer.from_dir(tmp_path)
    text = "Mr. Smith paid $5 for 3 books; 他买了2本书。"
    assert again.encode(text) == tok.encode(text) and len(again) == len(tok)
    # the plain Hugging Face file: the project's Tokenizer reads it, fed the prepared string
    plain = Tokenizer.from_dir(tmp_path)
    assert plain.encode(g2p(text)) == tok.encode(text)
    assert (plain.eos_token_id, plain.pad_token_id, len(plain)) == (1, 0, len(tok))
    assert plain.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    markup = "<|im_start|>" + g2p("hello") + "<|im_end|>"
    assert tok.tokenize(markup)[0] == 2 and tok.tokenize(markup)[-1] == 1
    # the G2P settings travel with the directory
    sandhi = PhonemeTokenizer.train([g2p(t) for _, t, _ in SENTENCES], len(tok), G2PConfig(zh_tone_sandhi=True))
    sandhi.save(tmp_path / "sandhi")
    assert PhonemeG2P.from_dir(tmp_path / "sandhi").g2p.config.zh_tone_sandhi
    assert PhonemeTokenizer.from_dir(tmp_path / "sandhi").decode(sandhi.encode("你好")) == " ni2hao3"
    # a directory made with another symbol table is refused
    meta = json.loads((tmp_path / "phonemes.json").read_text(encoding="utf-8"))
    meta["symbols"]["en:h"], meta["symbols"]["en:ə"] = symbol_table()["en:ə"], symbol_table()["en:h"]
    (tmp_path / "phonemes.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(TokenizerError, match="symbol table"):
        PhonemeTokenizer.from_dir(tmp_path)


def _recipe():
    spec = importlib.util.spec_from_file_location("text_frontend_recipe", ROOT / "recipes" / "text_frontend.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_recipe_tokens_per_second_check(tmp_path, capsys):
    recipe = _recipe()
    manifest = tmp_path / "corpus.jsonl"
    # 2.5 words (or 4 Han characters) per second of speech, each sentence three times
    rows = [{"text": t, "language": lang, "duration": n / (2.5 if lang == "en" else 4.0)} for lang, t, n in SENTENCES]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows * 3), encoding="utf-8")
    cfg = recipe.load_config(ROOT / "recipes" / "configs" / "text_frontend_tiny.yaml")
    cfg = replace(cfg, train_manifests=[str(manifest)], rate_manifests=[str(manifest)])

    # no merges: one id per phoneme, far above 5 per second
    with pytest.raises(recipe.RecipeError, match="tokens per second above 5.0"):
        recipe.run(replace(cfg, vocab_size=base_vocab_size(), output_dir=str(tmp_path / "small")))
    assert not (tmp_path / "small").exists()

    stats = recipe.run(replace(cfg, output_dir=str(tmp_path / "big")))
    assert set(stats) == {"en", "zh"} and all(s["tokens_per_second"] < 5.0 for s in stats.values())
    assert stats["en"]["sentences"] == 15 and stats["en"]["seconds"] == pytest.approx(3 * 39 / 2.5)
    assert "tokens/s" in capsys.readouterr().out
    assert PhonemeTokenizer.from_dir(tmp_path / "big").encode("Glue the sheet.") == PhonemeTokenizer.from_dir(
        tmp_path / "big"
    ).encode("glue the sheet.")

    with pytest.raises(recipe.RecipeError, match="duration"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "hi", "language": "en"}\n', encoding="utf-8")
        recipe.run(replace(cfg, rate_manifests=[str(bad)]))


def test_recipe_reads_corpus_manifests_and_their_rate_splits(tmp_path):
    # the corpus builder's manifests name the language ``lang`` and carry a ``split``
    recipe = _recipe()
    manifest = tmp_path / "corpus.jsonl"
    rows = [{"text": t, "lang": lang, "duration": n / 2.5, "split": split}
            for lang, t, n in SENTENCES for split in ("train", "dev")]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cfg = recipe.load_config(ROOT / "recipes" / "configs" / "text_frontend_tiny.yaml")
    cfg = replace(cfg, train_manifests=[str(manifest)], rate_manifests=[str(manifest)], output_dir=str(tmp_path / "t"))
    every = recipe.run(cfg)
    dev = recipe.run(replace(cfg, rate_splits=["dev"]))
    assert sum(s["sentences"] for s in every.values()) == 2 * sum(s["sentences"] for s in dev.values())
    assert dev["en"]["tokens_per_second"] == pytest.approx(every["en"]["tokens_per_second"])
