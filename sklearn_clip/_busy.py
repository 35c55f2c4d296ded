"""Busy processes beside a measurement: a machine shared with other jobs.

Kept apart from the benchmark, with nothing but torch to import, so that a
busy process starts in about the time torch takes to import (importing the
benchmark's module in each spawned process cost seconds more).
"""

import contextlib
import multiprocessing


def _busy_torch_loop(stop, started):
    """What a busy process runs: a 256x512 @ 512x512 matrix product in a
    loop, with torch's default threads (another job like ours).
    """
    import torch

    a, b = torch.randn(256, 512), torch.randn(512, 512)
    a @ b
    started.set()
    while not stop.is_set():
        for _ in range(50):
            a @ b


@contextlib.contextmanager
def busy_torch_processes(n):
    """Run ``n`` busy torch processes (:func:`_busy_torch_loop`) for the
    duration of the block: a machine shared with other jobs.
    """
    if n < 1:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    events = [context.Event() for _ in range(n)]
    processes = [
        context.Process(target=_busy_torch_loop, args=(stop, event), daemon=True)
        for event in events
    ]
    for process in processes:
        process.start()
    try:
        for event in events:
            if not event.wait(120):
                raise RuntimeError("a busy process did not start within 120 s")
        yield
    finally:
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
