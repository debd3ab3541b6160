import pytest

from smallbench.stats import CV_THRESHOLD, bootstrap_ci, summarize


def test_summary_by_hand():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.n, s.mean, s.min, s.max, s.p50) == (5, 3.0, 1.0, 5.0, 3.0)
    assert s.p90 == pytest.approx(4.6)  # linear interpolation: 4 + 0.6 * (5 - 4)
    assert s.std == pytest.approx(1.5811388, rel=1e-6)  # sample std (ddof=1)
    assert s.cv == pytest.approx(1.5811388 / 3, rel=1e-6)
    assert s.cv_flag is True
    assert s.ci95_low <= s.p50 <= s.ci95_high


def test_steady_samples_not_flagged():
    s = summarize([100.0, 101.0, 99.0, 100.5, 99.5])
    assert s.cv < CV_THRESHOLD and not s.cv_flag


def test_single_sample_and_empty():
    s = summarize([7.0])
    assert s.std == 0 and s.ci95_low == s.ci95_high == 7.0
    with pytest.raises(ValueError):
        summarize([])


def test_bootstrap_is_deterministic_and_narrows():
    wide = bootstrap_ci([1, 5, 9, 2, 8, 3, 7])
    assert wide == bootstrap_ci([1, 5, 9, 2, 8, 3, 7])
    narrow = bootstrap_ci([5.0, 5.1, 4.9, 5.0, 5.05, 4.95, 5.0])
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
