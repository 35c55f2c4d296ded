"""How busy the machine was while something ran, so that timings explain
themselves.

:class:`LoadMonitor` measures, over a block of code, the CPU time other
processes took (from ``/proc/stat`` less this process's own CPU time), the
CPU time the hypervisor stole, and the mean 1-minute load average
(:func:`os.getloadavg`, sampled). :class:`MachineLoad` holds the result and
names the conditions: ``"idle"`` only when both of these held over the run:

- other processes used less than :data:`IDLE_OTHER_CORES` of one core on
  average (their CPU-seconds divided by the wall-clock seconds), and
- the hypervisor stole less than :data:`IDLE_STEAL_FRACTION` of the CPU time.

The load average is printed beside them but does not decide: it counts this
process's own threads too, and on Linux processes waiting for the disk.
Where ``/proc/stat`` is missing (macOS, Windows) the other processes' CPU
time is unknown, and the conditions are never called idle.
"""

import os
import threading
import time
from dataclasses import asdict, dataclass

#: Other processes' mean CPU use, in cores, below which a run is idle.
IDLE_OTHER_CORES = 0.25
#: Fraction of the CPU time stolen by the hypervisor below which a run is idle.
IDLE_STEAL_FRACTION = 0.05


def _cpu_times():
    """``(busy seconds, steal seconds, total seconds)`` of every core since
    boot from ``/proc/stat``, or None where it cannot be read.
    """
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already
    # counted in user and nice).
    ticks = [int(value) for value in fields[1:9]]
    ticks += [0] * (8 - len(ticks))
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    steal = ticks[7]
    total = sum(ticks)
    return (total - idle - steal) / hz, steal / hz, total / hz


def cpu_model():
    """The processor's name ("AMD EPYC", "Intel(R) Xeon(R) ...") where
    ``/proc/cpuinfo`` gives it, else the architecture.
    """
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _own_cpu_seconds():
    """CPU seconds of this process (every thread) and of its children that
    have finished (DataLoader workers, busy processes the bench started).
    """
    seconds = time.process_time()
    try:
        import resource
    except ImportError:  # Windows
        return seconds
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds + children.ru_utime + children.ru_stime


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@dataclass
class MachineLoad:
    """The machine's load over a run: sums that add up over several runs.

    ``other_cpu_seconds`` and ``steal_seconds`` are None where ``/proc/stat``
    cannot be read; ``load_average_sum`` / ``load_average_samples`` is the
    mean sampled 1-minute load average.
    """

    wall_seconds: float = 0.0
    own_cpu_seconds: float = 0.0
    other_cpu_seconds: float | None = 0.0
    steal_seconds: float | None = 0.0
    cpu_seconds: float | None = 0.0  # all cores' time, busy or not
    load_average_sum: float = 0.0
    load_average_samples: int = 0
    cores: int = os.cpu_count() or 1

    def __add__(self, other):
        def add(a, b):
            return None if a is None or b is None else a + b

        return MachineLoad(
            wall_seconds=self.wall_seconds + other.wall_seconds,
            own_cpu_seconds=self.own_cpu_seconds + other.own_cpu_seconds,
            other_cpu_seconds=add(self.other_cpu_seconds, other.other_cpu_seconds),
            steal_seconds=add(self.steal_seconds, other.steal_seconds),
            cpu_seconds=add(self.cpu_seconds, other.cpu_seconds),
            load_average_sum=self.load_average_sum + other.load_average_sum,
            load_average_samples=self.load_average_samples + other.load_average_samples,
            cores=self.cores,
        )

    @property
    def other_cores(self):
        """Other processes' mean CPU use over the run, in cores (or None)."""
        if self.other_cpu_seconds is None or self.wall_seconds <= 0:
            return None
        return self.other_cpu_seconds / self.wall_seconds

    @property
    def steal_fraction(self):
        if self.steal_seconds is None or not self.cpu_seconds:
            return None
        return self.steal_seconds / self.cpu_seconds

    @property
    def load_average(self):
        """Mean sampled 1-minute load average (None where unknown)."""
        if not self.load_average_samples:
            return None
        return self.load_average_sum / self.load_average_samples

    @property
    def idle(self):
        """Whether the run counts as idle (the rule in the module's docstring)."""
        return (
            self.other_cores is not None
            and self.steal_fraction is not None
            and self.other_cores < IDLE_OTHER_CORES
            and self.steal_fraction < IDLE_STEAL_FRACTION
        )

    def describe(self):
        """``"idle (...)"`` or ``"busy: ..."``, with the measured figures."""
        parts = []
        if self.other_cores is None:
            parts.append("other processes' CPU use unknown (no /proc/stat)")
        else:
            parts.append(
                f"other processes used {self.other_cores:.2f} of {self.cores} cores"
            )
        if self.steal_fraction is not None and self.steal_fraction >= 0.005:
            parts.append(f"{100 * self.steal_fraction:.0f} % stolen")
        if self.load_average is not None:
            parts.append(f"load average {self.load_average:.2f}")
        figures = ", ".join(parts)
        return f"idle ({figures})" if self.idle else f"busy: {figures}"

    def as_dict(self):
        """The sums and the derived figures, for JSON."""
        return {
            **asdict(self),
            "other_cores": self.other_cores,
            "steal_fraction": self.steal_fraction,
            "load_average": self.load_average,
            "idle": self.idle,
            "description": self.describe(),
        }


class LoadMonitor:
    """Measure the machine's load over a ``with`` block.

    Parameters
    ----------
    interval : float, default=5.0
        Seconds between samples of the load average (a daemon thread; the
        CPU times come from the start and the end only).

    Examples
    --------
    >>> from sklearn_clip._machine_load import LoadMonitor
    >>> with LoadMonitor() as monitor:
    ...     _ = sum(range(10_000))
    >>> monitor.result.describe().startswith(("idle", "busy"))
    True
    """

    def __init__(self, interval=5.0):
        self.interval = interval
        self.result = None

    def __enter__(self):
        self._stop = threading.Event()
        self._samples = []
        self._sample()
        self._cpu = _cpu_times()
        self._own = _own_cpu_seconds()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        value = _load_average()
        if value is not None:
            self._samples.append(value)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __exit__(self, *exc_info):
        wall = time.perf_counter() - self._start
        own = _own_cpu_seconds() - self._own
        cpu = _cpu_times()
        self._stop.set()
        self._thread.join()
        self._sample()
        if cpu is None or self._cpu is None:
            other = steal = total = None
        else:
            busy = cpu[0] - self._cpu[0]
            steal, total = cpu[1] - self._cpu[1], cpu[2] - self._cpu[2]
            # /proc/stat counts in clock ticks: clamp the rounding below 0.
            other = max(busy - own, 0.0)
        self.result = MachineLoad(
            wall_seconds=wall,
            own_cpu_seconds=own,
            other_cpu_seconds=other,
            steal_seconds=steal,
            cpu_seconds=total,
            load_average_sum=float(sum(self._samples)),
            load_average_samples=len(self._samples),
        )
        return False
