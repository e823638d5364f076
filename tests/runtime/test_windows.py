"""The window grid's cover rule (issue 21): windows cover a clip without a mostly-padded tail."""
import numpy as np
import pytest

from edgeaudio.windows import cut_windows, hop_samples, iter_windows, window_starts

RATE = 16000
WINDOW = 15872          # 0.992 s: a 49-frame window at hop 320 (the keyword model)
HOP = 4000              # 0.25 s


def test_a_clip_of_window_plus_8_ms_is_one_window():
    assert window_starts(WINDOW + RATE * 8 // 1000, WINDOW, HOP) == [0]
    assert window_starts(RATE, WINDOW, HOP) == [0]            # the 1.000 s clips


def test_a_clip_no_longer_than_the_window_is_one_padded_window():
    assert window_starts(10, WINDOW, HOP) == [0]
    assert window_starts(WINDOW, WINDOW, HOP) == [0]
    windows = cut_windows(np.ones(100, np.float32), WINDOW, HOP)
    assert windows.shape == (1, WINDOW)
    assert windows[0, :100].sum() == 100 and not windows[0, 100:].any()


@pytest.mark.parametrize("n_samples", [WINDOW + 1999, WINDOW + 2000, WINDOW + 7 * HOP + 123,
                                       WINDOW + 7 * HOP + 3999, 5 * RATE, 3600 * RATE])
def test_no_window_is_padded_and_the_tail_is_covered_or_small(n_samples):
    starts = window_starts(n_samples, WINDOW, HOP)
    assert starts[0] == 0 and all(s + WINDOW <= n_samples for s in starts)   # no padding
    assert all(0 < b - a <= HOP for a, b in zip(starts, starts[1:]))          # no gap
    uncovered = n_samples - (starts[-1] + WINDOW)
    assert 0 <= uncovered < HOP / 2


def test_the_tail_rule_at_half_a_hop():
    grid_end = WINDOW + 3 * HOP                 # the grid covers this exactly: 4 windows
    assert window_starts(grid_end, WINDOW, HOP) == [0, HOP, 2 * HOP, 3 * HOP]
    assert window_starts(grid_end + HOP // 2 - 1, WINDOW, HOP) == [0, HOP, 2 * HOP, 3 * HOP]
    shifted = window_starts(grid_end + HOP // 2, WINDOW, HOP)
    assert shifted == [0, HOP, 2 * HOP, 3 * HOP, 3 * HOP + HOP // 2]        # ends at the end


def test_cut_windows_holds_the_clip_samples():
    wave = np.arange(WINDOW + 3 * HOP, dtype=np.float32)
    windows = cut_windows(wave, WINDOW, HOP)
    for start, window in zip(window_starts(len(wave), WINDOW, HOP), windows):
        np.testing.assert_array_equal(window, wave[start:start + WINDOW])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        window_starts(100, WINDOW, 0)
    with pytest.raises(ValueError):
        window_starts(100, 0, HOP)
    assert hop_samples(1e-9, RATE) == 1 and hop_samples(0.25, RATE) == HOP


@pytest.mark.parametrize("n_samples", [5, WINDOW, WINDOW + 1, WINDOW + 1999, WINDOW + 2000,
                                       WINDOW + 5 * HOP, 3 * WINDOW + 777])
@pytest.mark.parametrize("block", [1000, 4000, WINDOW + 3, 10 * WINDOW])
def test_windows_from_blocks_equal_the_whole_waves(n_samples, block):
    wave = np.random.default_rng(n_samples).normal(size=n_samples).astype(np.float32)
    blocks = [wave[i:i + block] for i in range(0, n_samples, block)]
    streamed = np.stack(list(iter_windows(blocks, WINDOW, HOP)))
    padded = np.concatenate((wave, np.zeros(WINDOW, np.float32)))
    sliced = [padded[s:s + WINDOW] for s in window_starts(n_samples, WINDOW, HOP)]
    np.testing.assert_array_equal(streamed, np.stack(sliced))
