"""What else the machine did while a suite ran: real processes spinning beside the watched one, or inside its tree."""

import os
import time

import pytest

from smallbench.telemetry import CpuWatch
from tests.conftest import spinner


def test_another_process_spinning_makes_the_machine_busy():
    with spinner(), CpuWatch() as watch:
        time.sleep(1.5)
    c = watch.contention
    assert c is not None and c.busy
    assert c.others_cpus > 0.6 and c.own_cpus < 0.3 and 1.4 < c.seconds < 3


def test_the_watched_process_trees_own_work_is_not_the_others():
    """An engine's own processes (vLLM's engine core, a server) are children of the cell: their CPU is the cell's."""
    with CpuWatch() as watch, spinner(ours=True):
        time.sleep(1.5)
    c = watch.contention
    assert c.own_cpus > 0.6 and c.others_cpus < 0.5  # (busy may still be set: by the hypervisor's steal)


def test_a_window_too_short_for_the_clock_ticks_is_not_judged():
    """Linux counts CPU time in 10 ms ticks: one stray tick of another process in a 30 ms suite would read as a third
    of a CPU. A flag needs 0.1 CPU-seconds of evidence; a spinner running through the short window has no more."""
    with spinner(), CpuWatch() as watch:
        time.sleep(0.03)
    assert not watch.contention.busy and watch.contention.others_cpus > 0  # seen, not enough to judge


def test_steal_is_a_share_of_the_cpu_time_asked_for():
    """The hypervisor cannot steal from an idle CPU: MLX's one thread on a 2-vCPU VM losing 0.22 CPU-seconds a second
    (the Tiny Aya MLX run of 2026-12-01) is a fifth of what it asked for, though only 11 % of both CPUs' time."""
    from smallbench.telemetry import judge

    seconds = 1425.8
    lost = judge(seconds, 2, own=0.888 * seconds, busy=0.930 * seconds, stolen=0.22 * seconds)
    assert lost.busy and lost.steal == pytest.approx(0.22 / 1.15) and lost.others_cpus == pytest.approx(0.042)
    quiet = judge(seconds, 2, own=0.995 * seconds, busy=1.007 * seconds, stolen=0.02 * seconds)
    assert not quiet.busy and quiet.steal < 0.05
    assert judge(0.05, 2, own=0.05, busy=0.06, stolen=0.01).busy is False  # one tick: not enough to judge
    assert judge(10.0, 64, own=10.0, busy=50.0, stolen=None).busy  # others took 4 of 64 CPUs
    assert not judge(10.0, 64, own=10.0, busy=25.0, stolen=None).busy  # 1.5 of 64: under 5 % of the machine


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two CPUs")
def test_a_pinned_run_counts_only_the_cpus_it_may_use():
    """A run pinned to one CPU (taskset, a container's cpuset) is not slowed by work pinned to another CPU: that
    work is not counted as others'; the same work on its own CPU is."""
    first, second = sorted(os.sched_getaffinity(0))[:2]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {first})
    try:
        for where, busy in ((second, False), (first, True)):
            with spinner() as pid:
                os.sched_setaffinity(pid, {where})
                with CpuWatch() as watch:
                    time.sleep(1.5)
            c = watch.contention
            assert c.cpus == 1
            assert (c.others_cpus > 0.6) is busy, (where, c)
            assert c.busy if busy else (not c.busy or c.steal >= 0.05), (where, c)  # steal alone may flag a VM
    finally:
        os.sched_setaffinity(0, before)
