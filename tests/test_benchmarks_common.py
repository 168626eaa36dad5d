"""The benchmarks' side-by-side measurement and self-check (benchmarks/_common.py): rounds alternate in
A B | B A order with a pause at every change of side, a PyTorch time beyond the noise of a standalone
measurement is flagged and gets no ratio, and a standalone measurement runs in another process."""
import os

import pytest

from benchmarks import _common
from benchmarks._common import Timing, check_reference, interleave, ratio_cell, run_standalone


def test_interleave_alternates_and_pauses_at_every_change_of_side(monkeypatch):
    events = []
    monkeypatch.setattr(_common, "pause", lambda seconds=0.3: events.append("pause"))
    sampler = lambda name: (lambda: events.append(name) or 1.0)      # noqa: E731
    out = interleave({"tt": sampler("tt"), "np": sampler("np"), "torch": sampler("torch")}, rounds=3, per_round=2,
                     side=lambda name: name == "torch")
    assert events == ["tt", "tt", "np", "np", "pause", "torch", "torch",
                      "torch", "torch", "pause", "np", "np", "tt", "tt",
                      "tt", "tt", "np", "np", "pause", "torch", "torch"]
    assert out == {"tt": [1.0] * 6, "np": [1.0] * 6, "torch": [1.0] * 6}


def _timing(median, spread=0.0):
    return Timing(median, median * (1 - spread / 2), median * (1 + spread / 2), median * (1 - spread / 2), 1, 9)


def test_check_flags_a_deviation_beyond_noise_and_withholds_the_ratio():
    quiet = check_reference(_timing(0.110, 0.04), _timing(0.100, 0.04))      # +10%, within the 15% floor
    assert quiet.ok and ratio_cell(0.120, 0.110, quiet) == pytest.approx(0.120 / 0.110)
    slowed = check_reference(_timing(0.320, 0.04), _timing(0.085, 0.04))     # PyTorch slowed 4x beside NumPy
    assert not slowed.ok and slowed.label().startswith("FLAGGED +276%") and ratio_cell(0.101, 0.320, slowed) is None
    noisy_but_within = check_reference(_timing(0.130, 0.2), _timing(0.100, 0.2))   # +30%, noise allows 40%
    assert noisy_but_within.ok and noisy_but_within.tolerance == pytest.approx(0.4)
    too_noisy = check_reference(_timing(0.100, 0.6), _timing(0.100, 0.6))    # equal medians, noise 120%
    assert not too_noisy.ok and "too noisy" in too_noisy.label()


def test_run_standalone_runs_in_a_fresh_process():
    assert run_standalone(os.getpid) != os.getpid()
    with pytest.raises(RuntimeError, match="failed"):
        run_standalone(os.getpgid, -5)
