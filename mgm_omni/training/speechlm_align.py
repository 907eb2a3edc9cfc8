"""Where each speech unit's text is: forced alignment of a SpeechLM target's text ids to its units.

The guided-attention loss (:mod:`~mgm_omni.training.speechlm_guide`) asks a few heads to look at the text
being spoken. Without an aligner it can only assume that speech and text advance together (a linear band a
few ids wide). With one it can point at the id itself. The aligner here needs no audio model of its own: a
CTC phoneme reader of the units (``recipes/mouth_unit_probe.py --save``, trained on the same corpus) gives
per-frame phoneme log-probabilities, the target's G2P phonemes are forced through them (Viterbi over the CTC
states), and each phoneme belongs to the phoneme-BPE text id that spells it, so each unit gets a phoneme and
the index of a text id (:func:`unit_labels`). The SpeechLM rows then take, per unit row, the text index of one
of its units and the phoneme of each (:func:`row_alignment`): the guide's band centre and, optionally, the
targets of an auxiliary phoneme loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mgm_omni.text.phoneme_tokenizer import symbol_table


def ctc_forced_path(logp: torch.Tensor, labels: Sequence[int], blank: int = 0) -> np.ndarray:
    """For each frame of ``logp`` (F, C) log-probabilities, the index into ``labels`` of the label it belongs
    to on the best CTC path emitting exactly ``labels``: a blank frame belongs to the label before it (the
    first label for leading blanks). ``ValueError`` when no path fits (fewer frames than the labels need)."""
    n, frames = len(labels), logp.shape[0]
    if n == 0:
        raise ValueError("nothing to align: no labels")
    states = torch.full((2 * n + 1,), blank, dtype=torch.long)
    states[1::2] = torch.as_tensor(list(labels), dtype=torch.long)
    emit = logp[:, states].float()  # (F, S)
    s = len(states)
    skip_ok = torch.zeros(s, dtype=torch.bool)  # label -> next label over a blank, unless they are equal
    skip_ok[3::2] = states[3::2] != states[1:-2:2]
    neg = torch.tensor(float("-inf"))
    score = torch.full((s,), float("-inf"))
    score[:2] = emit[0, :2]
    back = torch.zeros(frames, s, dtype=torch.long)
    idx = torch.arange(s)
    for f in range(1, frames):
        stay = score
        step = torch.cat([neg[None], score[:-1]])
        jump = torch.where(skip_ok, torch.cat([neg[None].expand(2), score[:-2]]), neg)
        best = torch.stack([stay, step, jump])  # (3, S)
        arg = best.argmax(0)
        score = best.gather(0, arg[None])[0] + emit[f]
        back[f] = idx - arg
    end = s - 1 if score[s - 1] >= score[s - 2] else s - 2
    if not torch.isfinite(score[end]):
        raise ValueError(f"{frames} frames cannot emit {n} labels")
    path = np.empty(frames, dtype=np.int64)
    for f in range(frames - 1, -1, -1):
        path[f] = end
        end = int(back[f, end])
    label = np.maximum(path - 1, 0) // 2  # blank 2i (i > 0) belongs to label i - 1, label state 2i + 1 to i
    return label


def phone_counts(frontend, ids: Sequence[int]) -> list[int]:
    """Phoneme symbols spelt by each id of a phoneme-BPE front-end (0 for marks, word starts, specials)."""
    symbols = set(symbol_table().values())
    return [sum(ch in symbols for ch in frontend.backend_token(int(i))) for i in ids]


def unit_labels(frame_label: np.ndarray, frames_per_unit: int) -> np.ndarray:
    """Label index per unit: the label of each unit's last frame."""
    units = len(frame_label) // frames_per_unit
    return frame_label[frames_per_unit - 1: units * frames_per_unit: frames_per_unit]


def row_alignment(unit_index: np.ndarray, unit_phones: np.ndarray | None, k: int, skipped: int, n_text: int
                  ) -> np.ndarray:
    """Per unit row (``k`` units each, the last one possibly short) ``[text index, phoneme of each unit]``
    (G, 1 + k): the chunk-relative text index of the row's second unit, after ``skipped`` leading ids that the
    layout drops, clipped to the chunk's ``n_text`` ids; then the phoneme id of each of its units (-1 past the
    last unit, or everywhere without ``unit_phones``)."""
    n = len(unit_index)
    rows = -(-n // k)
    pick = np.minimum(np.arange(rows) * k + min(1, k - 1), n - 1)
    out = np.full((rows, 1 + k), -1, dtype=np.int32)
    out[:, 0] = np.clip(unit_index[pick] - skipped, 0, max(n_text - 1, 0))
    if unit_phones is not None:
        padded = np.full(rows * k, -1, dtype=np.int32)
        padded[:n] = unit_phones
        out[:, 1:] = padded.reshape(rows, k)
    return out
