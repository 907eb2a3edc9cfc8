"""Long audio cut at pauses: every cut lies in a gap between sounds, spans cover the audio and respect the limit."""

from __future__ import annotations

import pytest
import torch

from mgm_omni.generation.mllm.pause_split import PauseSplitError, pause_spans, quietest_sample

SR = 16000


def bursts(gaps: list[tuple[float, float]], seconds: float, seed: int = 0) -> torch.Tensor:
    """Noise everywhere except in the ``(start, stop)`` second ranges of ``gaps`` (low hiss there)."""
    g = torch.Generator().manual_seed(seed)
    wave = 0.3 * torch.randn(int(seconds * SR), generator=g)
    for a, b in gaps:
        wave[int(a * SR):int(b * SR)] *= 0.001
    return wave


def test_cuts_fall_in_the_pauses():
    gaps = [(24.0, 24.6), (50.5, 51.0), (77.2, 77.5)]
    wave = bursts(gaps, 100.0)
    spans = pause_spans(wave, 30 * SR, 10 * SR)
    assert spans[0][0] == 0 and spans[-1][1] == wave.shape[0]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, nothing lost or repeated
    assert all(0 < stop - start <= 30 * SR for start, stop in spans)
    cuts = [stop / SR for _, stop in spans[:-1]]
    assert len(cuts) == 3
    for cut, (a, b) in zip(cuts, gaps):
        assert a + 0.04 <= cut <= b - 0.04, (cut, a, b)  # inside the pause, not at its edge


def test_short_audio_is_one_span_and_a_pauseless_one_still_fits_the_limit():
    assert pause_spans(torch.zeros(5 * SR), 30 * SR, 10 * SR) == [(0, 5 * SR)]
    wave = bursts([], 65.0)
    spans = pause_spans(wave, 30 * SR, 10 * SR)
    assert len(spans) == 3 and all(stop - start <= 30 * SR for start, stop in spans)
    assert spans[-1][1] == wave.shape[0]


def test_digital_silence_is_cut_in_the_middle_of_the_last_quiet_run():
    piece = torch.ones(16000)
    piece[2000:3000] = 0  # an earlier silent run
    piece[8000:12000] = 0  # the last one: 8000..12000, centre 10000
    assert abs(quietest_sample(piece) - 10000) <= 320


@pytest.mark.parametrize("wave,max_s,search,match", [
    (torch.zeros(10, 2), 100, 10, "mono"),
    (torch.zeros(100), 0, 10, "search_samples"),
    (torch.zeros(100), 50, 60, "search_samples"),
])
def test_bad_settings_are_refused(wave, max_s, search, match):
    with pytest.raises(PauseSplitError, match=match):
        pause_spans(wave, max_s, search)
