"""Forced alignment for the guided-attention loss: the CTC Viterbi path is the best path (brute force on small
cases), units and rows get the text index of the phonemes they hold, and written rows carry an ``align`` field
that the guide's chunks pick up."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mgm_omni.config import SpeechLMConfig
from mgm_omni.generation.speech.layout import ChunkRules
from mgm_omni.text import load_text_frontend
from mgm_omni.training.config import read_yaml
from mgm_omni.training.shards import ShardDataset
from mgm_omni.training.speechlm_align import ctc_forced_path, row_alignment, unit_labels
from mgm_omni.training.speechlm_guide import chunk_bands
from mgm_omni.training.speechlm_rows import (
    RowCollate,
    SequenceSpec,
    choose_references,
    read_jsonl,
    write_sequences,
)
from mgm_omni.training.synthetic_corpus import write_char_tokenizer, write_synthetic_corpus
from mgm_omni.training.unit_shards import read_units

from recipe_runner import CONFIGS


def _brute_force(logp: torch.Tensor, labels: list[int]) -> list[int]:
    """The label index per frame of the best CTC path, by enumerating every frame -> state assignment."""
    states = [0]
    for lab in labels:
        states += [lab, 0]
    best, best_path = -float("inf"), None
    for path in itertools.product(range(len(states)), repeat=logp.shape[0]):
        if path[0] > 1 or path[-1] < len(states) - 2:
            continue
        ok = all(b - a in (0, 1) or (b - a == 2 and states[b] != 0 and states[b] != states[a])
                 for a, b in zip(path, path[1:]))
        if not ok:
            continue
        score = sum(float(logp[f, states[s]]) for f, s in enumerate(path))
        if score > best:
            best, best_path = score, path
    return [max(s - 1, 0) // 2 for s in best_path]


@pytest.mark.parametrize("labels,frames,seed", [([1, 2, 1], 6, 0), ([2, 2], 5, 1), ([3, 1, 3, 2], 7, 2)])
def test_forced_path_is_the_best_ctc_path(labels, frames, seed):
    g = torch.Generator().manual_seed(seed)
    logp = torch.randn(frames, 4, generator=g).log_softmax(-1)
    assert ctc_forced_path(logp, labels).tolist() == _brute_force(logp, labels)


def test_forced_path_follows_clear_frames_and_refuses_too_few():
    # frames say: 3 3 _ 1 1 _ 3 3 (blank = 0)
    said = [3, 3, 0, 1, 1, 0, 3, 3]
    logp = torch.full((len(said), 4), -10.0)
    logp[torch.arange(len(said)), torch.tensor(said)] = 0.0
    assert ctc_forced_path(logp, [3, 1, 3]).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="cannot emit"):
        ctc_forced_path(logp[:2], [2, 2])  # a repeated label needs a blank between: 3 frames at least
    with pytest.raises(ValueError, match="no labels"):
        ctc_forced_path(logp, [])


def test_units_and_rows_take_the_text_index_and_phonemes_of_their_labels():
    # 2 frames per unit; labels 0..3 are phonemes 7, 8, 9, 7 and belong to text ids 0, 0, 1, 3 (text id 2
    # spells no phoneme: a mark)
    frame_label = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    label = unit_labels(frame_label, frames_per_unit=2)
    assert label.tolist() == [0, 1, 2, 2, 3]
    index, phones = np.array([0, 0, 1, 3])[label], np.array([7, 8, 9, 7])[label]
    # k = 2 units per row: rows hold units (0,1) (2,3) (4); each takes its second unit's text index (the last
    # row its only unit's), and the phonemes of its units (-1 past the last)
    assert row_alignment(index, phones, 2, skipped=0, n_text=4).tolist() == [[0, 7, 8], [1, 9, 9], [3, 7, -1]]
    # one leading id dropped by the layout shifts the indices; they stay inside the chunk's text
    assert row_alignment(index, None, 2, skipped=1, n_text=3).tolist() == [[0, -1, -1], [0, -1, -1], [2, -1, -1]]


def test_written_rows_carry_the_alignment_the_guide_reads(tmp_path):
    write_char_tokenizer(tmp_path / "tok")
    items = write_synthetic_corpus(tmp_path / "corpus", speakers=2, items_per_speaker=3, longform_per_speaker=1,
                                   audio=False)
    units = read_units(tmp_path / "corpus" / "units")
    cfg = SpeechLMConfig.from_dict(read_yaml(CONFIGS / "speechlm_stage1_tiny.yaml", "model")["config"])
    frontend = load_text_frontend(tmp_path / "tok", "own-bpe")
    # a made-up alignment: unit u says text id u // 4 (the synthetic corpus has 4 units per character), and
    # phoneme 1 + u % 5
    alignments = {i["id"]: np.stack([np.arange(len(units[i["id"]])) // 4, 1 + np.arange(len(units[i["id"]])) % 5], 1)
                  for i in items}
    spec = SequenceSpec(ChunkRules(sentence_min_text=8, max_text=40), max_rows=600)  # long-form: several chunks
    pairs = choose_references(read_jsonl(tmp_path / "corpus" / "manifest.jsonl"), None, 0)
    counts = write_sequences(tmp_path / "rows", frontend, cfg, items, units, pairs, spec, alignments=alignments)
    utterances = sum(1 for t, _ in pairs if next(i for i in items if i["id"] == t)["kind"] == "utterance")
    assert counts["written"] == len(pairs) and counts["aligned"] == utterances > 0
    ds = ShardDataset(tmp_path / "rows")
    batch = RowCollate()([{k: torch.as_tensor(v) for k, v in ds[i].items()} for i in range(len(ds))])
    bands = chunk_bands(batch["rows"], batch["labels"], batch["rows_lengths"], cfg, batch["align"],
                        batch["align_lengths"])
    aligned = [b for b in bands if b.centre is not None]
    assert len(aligned) == utterances  # one chunk each; long-form items keep the linear band
    k = cfg.speech_token_count
    for band in aligned:
        g, n_units = len(band.unit_rows), len(units[pairs[band.batch][0]])  # rows are written in pair order
        assert g == -(-n_units // k)
        # each row's second unit (a short last row: its last unit), its text id clipped to the chunk's text
        expected = np.clip(np.minimum(np.arange(g) * k + 1, n_units - 1) // 4, 0, band.n_text - 1)
        assert band.centre.tolist() == expected.tolist()
        unit = np.arange(g * k).reshape(g, k)
        assert band.phones.tolist() == np.where(unit < n_units, 1 + unit % 5, -1).tolist()
