"""Benchmark loaders: JSONL, seed-tts lists, LibriSpeech trees; bad lines become per-item problems."""

from __future__ import annotations

import json

import pytest

from mgm_omni.eval.datasets import DatasetError, list_splits, load_split


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_directory_one_file_per_split(tmp_path):
    _write(
        tmp_path / "long_tts_eval_zh.jsonl",
        "\n".join(
            [
                json.dumps({"id": "a", "text": "今天", "text_norm": "今天"}, ensure_ascii=False),
                "",
                "{not json",
                json.dumps({"id": "b"}),
                json.dumps({"id": "a", "text": "again"}),
                json.dumps({"id": "c", "text": "hello", "language": "en", "audio": "c.wav"}),
            ]
        ),
    )
    _write(tmp_path / "other.jsonl", "")
    assert list_splits(tmp_path) == ["long_tts_eval_zh", "other"]
    split = load_split(tmp_path, "long_tts_eval_zh")
    assert [it.id for it in split.items] == ["a", "long_tts_eval_zh-line3", "b", "a", "c"]
    a, bad_json, no_text, dup, c = split.items
    assert a.language == "zh" and a.text_norm == "今天" and a.problem is None
    assert "line 3: invalid JSON" in bad_json.problem
    assert "line 4: needs 'id' and 'text'" in no_text.problem
    assert dup.problem == "duplicate id 'a'"
    assert c.language == "en" and c.audio == tmp_path / "c.wav"
    assert load_split(tmp_path, "other").items == []  # an empty split loads (and is reported later)


def test_seed_tts_list_fields(tmp_path):
    lst = _write(
        tmp_path / "zh" / "meta.lst",
        "\n".join(
            [
                "u1|参考 文本|prompt-wavs/u1.wav|你 好 世界",
                "u2|only three|fields",
                "u3|ref|prompt-wavs/u3.wav|a|b",
                "|ref|x.wav|text",
            ]
        ),
    )
    split = load_split(tmp_path, "zh")
    assert split.format == "seed-tts" and split.source == str(lst)
    u1, u2, u3, empty = split.items
    assert (u1.text, u1.ref_text, u1.language) == (
        "你好世界",
        "参考 文本",
        "zh",
    )  # spaces removed from zh targets
    assert u1.ref_audio == tmp_path / "zh" / "prompt-wavs" / "u1.wav"
    assert "expected 4 '|'-separated fields (id|ref_text|ref_audio|text), got 3" in u2.problem
    assert "got 5" in u3.problem and "line 3" in u3.problem
    assert "empty id or text" in empty.problem
    # the list file itself works too, its split named after its folder
    assert load_split(lst).name == "zh"


def test_librispeech_tree(tmp_path):
    chapter = tmp_path / "test-clean" / "1089" / "134686"
    _write(
        chapter / "1089-134686.trans.txt",
        "1089-134686-0000 HE HOPED THERE WOULD BE STEW\n1089-134686-0001 \n",
    )
    (chapter / "1089-134686-0000.flac").write_bytes(b"")
    split = load_split(tmp_path, "test-clean")
    assert split.format == "librispeech"
    first, second = split.items
    assert first.text == "HE HOPED THERE WOULD BE STEW" and first.audio == chapter / "1089-134686-0000.flac"
    assert first.language == "en" and "no transcript" in second.problem


def test_missing_split_and_path_errors(tmp_path):
    _write(tmp_path / "a.jsonl", "")
    with pytest.raises(DatasetError, match=r"split 'b' not found in .* available: a\)"):
        load_split(tmp_path, "b")
    with pytest.raises(DatasetError, match="pass --split"):
        load_split(tmp_path)
    with pytest.raises(DatasetError, match="no such file or directory"):
        load_split(tmp_path / "nope", "a")


def test_hub_offline_gives_one_clear_line(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError) as info:
        load_split("nobody/no-such-dataset", "long_tts_eval_en")
    msg = str(info.value)
    assert (
        "\n" not in msg
        and "from the hub (offline? pass --data-path DIR holding long_tts_eval_en.jsonl)" in msg
    )
