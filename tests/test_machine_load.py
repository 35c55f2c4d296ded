"""The machine's load, as the bench and the test suite's summary report it."""

import subprocess
import sys
import time
from types import SimpleNamespace

from sklearn_clip._machine_load import (
    IDLE_OTHER_CORES,
    IDLE_STEAL_FRACTION,
    LoadMonitor,
    MachineLoad,
)

from ._phase_timing import OTHER, PhaseTimer

SPIN = (
    "import time\n"
    "end = time.perf_counter() + {seconds}\n"
    "while time.perf_counter() < end: pass\n"
    "print(time.process_time())\n"
)


def test_another_process_cpu_time_counts_as_other_and_ours_as_own():
    # A process we have not waited for is another job on the machine; its
    # CPU time (whatever share of the cores the machine gives it) must show
    # up as other processes' time, and our own spinning must not.
    spinner = subprocess.Popen(
        [sys.executable, "-c", SPIN.format(seconds=1.5)],
        stdout=subprocess.PIPE,
        text=True,
    )
    with LoadMonitor(interval=0.2) as monitor:
        ours = time.process_time()
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            pass
        ours = time.process_time() - ours
    spinner_cpu = float(spinner.communicate()[0])  # waited for after the block
    load = monitor.result
    # /proc/stat counts in 10 ms ticks; the spinner's start-up ran before
    # the block.
    assert load.other_cpu_seconds > spinner_cpu - 0.3
    # Our spin (whatever share of the cores we got) is ours, not another's.
    assert ours <= load.own_cpu_seconds < ours + 0.1
    assert load.other_cpu_seconds + load.own_cpu_seconds <= load.cpu_seconds + 0.05
    assert load.load_average_samples >= 3
    assert not load.idle  # the spinner alone is a busy core
    assert load.describe().startswith("busy: other processes used ")
    record = load.as_dict()
    assert record["idle"] is False and record["other_cores"] == load.other_cores


def test_idle_only_when_others_and_steal_are_low():
    def load(other, steal, cpu=20.0):
        return MachineLoad(
            wall_seconds=10.0,
            other_cpu_seconds=other,
            steal_seconds=steal,
            cpu_seconds=cpu,
            load_average_sum=3.0,
            load_average_samples=2,
            cores=2,
        )

    just_below = IDLE_OTHER_CORES * 10 - 0.01
    assert load(just_below, 0.0).idle
    assert load(just_below, 0.0).describe() == (
        f"idle (other processes used {just_below / 10:.2f} of 2 cores, "
        "load average 1.50)"
    )
    assert not load(IDLE_OTHER_CORES * 10, 0.0).idle
    assert not load(0.0, IDLE_STEAL_FRACTION * 20).idle
    assert "5 % stolen" in load(0.0, IDLE_STEAL_FRACTION * 20).describe()
    # Unknown (no /proc/stat): never called idle.
    unknown = load(None, None, None)
    assert not unknown.idle and "unknown" in unknown.describe()
    # Sums add up over runs: the mean load average over all samples.
    both = load(1.0, 0.0) + load(3.0, 0.0)
    assert both.other_cores == 4.0 / 20 and both.load_average == 1.5


def test_the_suite_summary_names_each_slow_phase_with_its_time():
    timer = PhaseTimer()

    def report(nodeid, duration, *markers):
        return SimpleNamespace(
            nodeid=nodeid, duration=duration, keywords=dict.fromkeys(markers, 1)
        )

    kernel = "tests/test_numerics.py::test_checks_pass_under_each_kernel_choice"
    for r in (
        report("tests/distributed/test_store.py::test_a[dask]", 30.0, "distributed"),
        report("tests/distributed/test_store.py::test_a[dask]", 4.5, "distributed"),
        report(f"{kernel}[avx2]", 61.0, "slow"),
        report("tests/test_gda.py::test_b", 0.25),
    ):
        timer.pytest_runtest_logreport(r)
    lines = timer.lines()
    assert lines[0] == "local Dask and Ray clusters (-m distributed): 34.5 s in 1 test"
    assert lines[1].startswith("estimator checks rerun with torch's kernels")
    assert lines[1].endswith(": 1 min 1 s in 1 test")
    assert lines[2] == f"{OTHER}: 0.2 s in 1 test"
    assert lines[3].startswith("whole session: ")
    assert "the machine meanwhile: " in lines[3]
