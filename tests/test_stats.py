import pytest

from smallbench.stats import CV_THRESHOLD, bootstrap_ci, drift, summarize


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


def test_drift_flags_a_steady_slowdown_only():
    heating = [10.0, 10.2, 10.5, 10.9, 11.2, 11.6, 12.0, 12.5, 12.9]  # seconds per trial, slower and slower
    d = drift(heating, higher_is_better=False)
    assert d.flag and d.spearman == pytest.approx(1.0)
    assert d.slowdown == pytest.approx(12.5 / 10.2 - 1)  # median of the last third / of the first third
    rates = [1 / x for x in heating]  # the same trials as tok/s: slower means lower
    assert drift(rates, higher_is_better=True).slowdown == pytest.approx(d.slowdown)
    assert drift(rates, higher_is_better=True).flag
    assert not drift(heating[::-1], higher_is_better=False).flag  # warming up, getting faster
    noisy = [10.0, 10.4, 9.8, 10.3, 9.9, 10.2, 10.1, 9.7, 10.4]
    assert not drift(noisy, higher_is_better=False).flag
    creep = [10.0, 10.01, 10.02, 10.03, 10.04, 10.05]  # monotonic but under 5 %: not worth a flag
    c = drift(creep, higher_is_better=False)
    assert c.spearman == pytest.approx(1.0) and not c.flag
    flat = drift([5.0] * 6, higher_is_better=False)
    assert flat.spearman == 0 and flat.slowdown == 0 and not flat.flag
    assert drift(heating[:4], higher_is_better=False) is None  # too few trials to call a trend


def test_cooldown_sleeps_between_trials_only(monkeypatch):
    from smallbench.suites.base import SuiteSettings

    slept: list[float] = []
    monkeypatch.setattr("smallbench.suites.base.time.sleep", slept.append)
    trials = list(SuiteSettings(warmup=1, repeats=3, cooldown_s=2.5).trials())
    assert trials == [(0, False), (1, True), (2, True), (3, True)] and slept == [2.5, 2.5, 2.5]
    slept.clear()
    list(SuiteSettings(warmup=1, repeats=3).trials())
    assert slept == []
