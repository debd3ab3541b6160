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
