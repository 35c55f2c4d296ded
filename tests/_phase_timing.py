"""A terminal-summary section: how long the suite's slowest phases took, and
how busy the machine was meanwhile (registered by ``conftest.py``).

A phase's time is the sum of its tests' setup, call and teardown durations,
so a cluster started by a fixture counts in the phase of the test that
started it.
"""

import time

from sklearn_clip._machine_load import LoadMonitor

#: ``(phase, how to select it, does a test report belong to it)``, first
#: match wins; every other test counts in "the other tests".
PHASES = (
    (
        "local Dask and Ray clusters",
        "-m distributed",
        lambda report: "distributed" in report.keywords,
    ),
    (
        "estimator checks rerun with torch's kernels forced to AVX2 and default",
        "tests/test_numerics.py -k kernel_choice",
        lambda report: "test_checks_pass_under_each_kernel_choice" in report.nodeid,
    ),
    (
        "the other slow tests",
        "-m slow",
        lambda report: "slow" in report.keywords,
    ),
)
OTHER = "the other tests"


class PhaseTimer:
    """Sums test durations per phase and measures the machine's load over
    the session (pytest plugin).
    """

    def __init__(self):
        self.seconds = {name: 0.0 for name, _, _ in PHASES} | {OTHER: 0.0}
        self.tests = {name: set() for name in self.seconds}
        # Started on registration: conftest.py may load after the session
        # started.
        self.monitor = LoadMonitor(interval=10.0).__enter__()
        self.started = time.perf_counter()

    def pytest_runtest_logreport(self, report):
        phase = next((name for name, _, test in PHASES if test(report)), OTHER)
        self.seconds[phase] += report.duration
        self.tests[phase].add(report.nodeid)

    def lines(self):
        """One line per phase that ran, then the session's wall time and
        the machine's load over it.
        """
        selectors = {name: selector for name, selector, _ in PHASES}
        lines = []
        for name, seconds in self.seconds.items():
            if not self.tests[name]:
                continue
            selector = f" ({selectors[name]})" if name in selectors else ""
            count = len(self.tests[name])
            lines.append(
                f"{name}{selector}: {_minutes(seconds)} in {count} "
                f"test{'s' if count != 1 else ''}"
            )
        if self.monitor.result is None:
            self.monitor.__exit__(None, None, None)
        wall = time.perf_counter() - self.started
        lines.append(
            f"whole session: {_minutes(wall)}; the machine meanwhile: "
            f"{self.monitor.result.describe()}"
        )
        return lines

    def pytest_terminal_summary(self, terminalreporter):
        if not any(self.tests.values()):
            return
        lines = self.lines()
        terminalreporter.write_sep("=", "time of the slowest phases")
        for line in lines:
            terminalreporter.write_line(line)


def _minutes(seconds):
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
