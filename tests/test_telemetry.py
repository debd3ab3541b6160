"""What else the machine did while a suite ran: real processes spinning beside the watched one, or inside its tree."""

import time

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
    assert c.own_cpus > 0.6 and c.others_cpus < 0.5 and not c.busy


def test_a_window_too_short_for_the_clock_ticks_is_not_judged():
    """Linux counts CPU time in 10 ms ticks: one stray tick of another process in a 30 ms suite would read as a third
    of a CPU. A flag needs 0.1 CPU-seconds of evidence; a spinner running through the short window has no more."""
    with spinner(), CpuWatch() as watch:
        time.sleep(0.03)
    assert not watch.contention.busy and watch.contention.others_cpus > 0  # seen, not enough to judge
