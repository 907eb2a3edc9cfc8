"""3-D mRoPE position ids for a prompt mixing text, audio, images and video (spec §4.6).

A running index p walks the prompt. Text and audio tokens get (t, h, w) = (p, p, p), one step each. An image
or video of ``grid_thw`` (t, h, w) patches becomes t x (h/m) x (w/m) tokens whose positions are
(frame group, row, column) + p, after which p continues at their maximum + 1. Video frame groups are plain
indices 0, 1, 2, ...: MGM-Omni does not scale them by seconds as upstream Qwen2.5-VL does, and its
checkpoint was trained that way. The audio track of a video is just another audio span.

``rope_delta`` = max position + 1 - prompt length; a token decoded after a prompt of length L, with n
tokens already generated, sits at L + n + rope_delta on all three axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGE_PLACEHOLDER = -200  # "<image>" after tokenisation (images and videos alike)
SPEECH_PLACEHOLDER = -500  # "<speech>"

# A span: an int n is n sequential tokens (text or audio); a (t, h, w) tuple is one image or video grid.
Span = int | tuple[int, int, int]


class PositionError(ValueError):
    """Spans, grids or placeholders that do not describe a valid prompt."""


def vision_token_count(grid_thw: Sequence[int], merge_size: int = 2) -> int:
    """LLM tokens of one image/video: t * (h / m) * (w / m)."""
    t, h, w = (int(v) for v in grid_thw)
    return t * (h // merge_size) * (w // merge_size)


def mrope_positions(spans: Sequence[Span], merge_size: int = 2) -> tuple[torch.Tensor, int]:
    """Position ids of a whole prompt.

    Args:
        spans: the prompt in order; ints are runs of text/audio tokens, (t, h, w) tuples are vision grids
            in patches (as ``grid_thw``; h and w multiples of ``merge_size``).
        merge_size: the tower's spatial merge (2 for Qwen2.5-VL).
    Returns:
        positions (3, T) int64 over the T prompt tokens, and ``rope_delta``.
    """
    pieces, p = [], 0
    for span in spans:
        if isinstance(span, (int,)) and not isinstance(span, bool):
            if span < 0:
                raise PositionError(f"a token run cannot have negative length ({span})")
            pieces.append(torch.arange(p, p + span).expand(3, -1))
            p += span
            continue
        t, h, w = _grid(span, merge_size)
        # (3, t, h, w) grids of frame-group, row and column indices, flattened in (t, row, column) order
        idx = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
        pieces.append(idx.reshape(3, -1) + p)
        p += max(t, h, w)  # = max + 1 of the block
    if not pieces:
        raise PositionError("an empty prompt has no positions")
    positions = torch.cat(pieces, dim=1)
    return positions, p - positions.shape[1]


def decode_positions(prompt_len: int, rope_delta: int, start: int = 0, n: int = 1) -> torch.Tensor:
    """(3, n) positions of generated tokens ``start`` .. ``start + n - 1`` after ``prompt_len`` tokens."""
    pos = torch.arange(prompt_len + start, prompt_len + start + n) + rope_delta
    return pos.expand(3, -1)


def spans_from_placeholders(
    input_ids: Sequence[int] | torch.Tensor,
    vision_grids: Sequence = (),
    audio_lengths: Sequence[int] = (),
    image_placeholder: int = IMAGE_PLACEHOLDER,
    speech_placeholder: int = SPEECH_PLACEHOLDER,
) -> list[Span]:
    """Spans of a tokenised prompt whose media are still placeholders, as the official code splices them.

    Args:
        input_ids: token ids with ``image_placeholder`` / ``speech_placeholder`` where media go.
        vision_grids: per image placeholder, in order, a (t, h, w) grid or a list of grids (several images
            or a video and images sharing one placeholder, spliced one after the other).
        audio_lengths: per speech placeholder, in order, the number of audio feature tokens.
    """
    ids = torch.as_tensor(input_ids).reshape(-1).tolist()
    n_img, n_sp = ids.count(image_placeholder), ids.count(speech_placeholder)
    if n_img != len(vision_grids) or n_sp != len(audio_lengths):
        raise PositionError(f"the prompt has {n_img} image and {n_sp} speech placeholders, but "
                            f"{len(vision_grids)} vision grid entries and {len(audio_lengths)} audio "
                            "lengths were given")
    grids, audios = iter(vision_grids), iter(audio_lengths)
    spans: list[Span] = []
    run = 0
    for tok in ids:
        if tok not in (image_placeholder, speech_placeholder):
            run += 1
            continue
        if run:
            spans.append(run)
            run = 0
        if tok == speech_placeholder:
            spans.append(int(next(audios)))
        else:
            entry = next(grids)
            entry = torch.as_tensor(entry).reshape(-1, 3).tolist()
            spans.extend(tuple(g) for g in entry)
    if run:
        spans.append(run)
    return spans


def _grid(span, merge_size: int) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in span)
    except (TypeError, ValueError) as exc:
        raise PositionError(f"a vision span must be a (t, h, w) grid, got {span!r}") from exc
    if min(t, h, w) <= 0 or h % merge_size or w % merge_size:
        raise PositionError(f"grid {span!r} needs positive t and h, w multiples of {merge_size}")
    return t, h // merge_size, w // merge_size
