"""Pieces of the training loop tested on their own (the loop itself: tests/test_cli.py)."""
import pytest

from tinyseg.progress import RecentRate


def test_recent_rate_forgets_a_slow_start():
    meter = RecentRate(window=3, start=0.0)
    rates = [meter.update(t, n) for t, n in [(60.0, 8), (61.0, 16), (62.0, 24), (63.0, 32), (64.0, 40)]]
    assert rates[0] == pytest.approx(8 / 60)      # only the slow first interval is known
    assert rates[-1] == pytest.approx(8.0)        # the last 3 intervals: 24 images in 3 s
