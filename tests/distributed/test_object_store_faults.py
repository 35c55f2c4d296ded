"""Faults of jobs on an object store (moto's S3 server on loopback) and of
whole processes: two jobs started at once on one bucket, a store that never
answers, a missing bucket, URL inputs of the CLI, Ctrl-C then resume.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._cli import main as cli_main
from sklearn_clip._remote import TRANSIENT, forget_hosts
from sklearn_clip.distributed import EmbeddingStore, embed_to_parquet
from sklearn_clip.distributed._format import output_location, write_manifest

from ..conftest import TINY
from .conftest import BATCH_SIZE, moto_s3, part_times
from .test_faults import ImageServer, kinds_of

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]
ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def s3(images):
    """A moto S3 server on 127.0.0.1 with the images in ``s3://photos``;
    yields its storage_options."""
    import s3fs

    with moto_s3(("photos", "jobs")) as options:
        fs = s3fs.S3FileSystem(**options)
        for path in images:
            if os.path.exists(path):
                fs.put(path, f"s3://photos/{Path(path).name}")
        fs.invalidate_cache()
        yield options


def test_the_claim_of_a_folder_is_atomic_on_s3(s3):
    """Eight writers that all found no manifest: exactly one claims."""
    fs, root = output_location("s3://jobs/race", s3)
    results = [None] * 8
    barrier = threading.Barrier(8)

    def claim(i):
        barrier.wait()
        results[i] = write_manifest(fs, root, {"format": 1, "who": i}, exclusive=True)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 1
    with fs.open(f"{root}/_manifest.json") as handle:
        assert json.load(handle)["who"] == results.index(True)


class CLIProcess:
    """``sklearn-clip ARGV`` in a fresh Python process (spawned, not forked:
    a fork of this multithreaded test process may deadlock in the child),
    its stdout and stderr in ``log``; with ``go``, it waits for that file
    first, so that two of them start at once."""

    SCRIPT = (
        "import sys, time, warnings\n"
        # as pyproject's filterwarnings for the test session
        "warnings.filterwarnings('ignore', 'pretrained=None', UserWarning)\n"
        "from pathlib import Path\n"
        "from sklearn_clip._cli import main\n"
        "go, ready = sys.argv[1:3]\n"
        "Path(ready).touch()\n"
        "while go and not Path(go).exists():\n"
        "    time.sleep(0.005)\n"
        "sys.exit(main(sys.argv[3:]))\n"
    )

    def __init__(self, argv, log, go=None):
        self._log = open(log, "w")
        self._ready = Path(f"{log}.ready")
        self._process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(go or ""), str(self._ready), *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self._process.pid

    def wait_ready(self, timeout=120):
        """Wait until the process has imported the package."""
        deadline = time.monotonic() + timeout
        while not self._ready.exists():
            assert self.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)

    def is_alive(self):
        return self._process.poll() is None

    def join(self, timeout=None):
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        self._log.close()

    @property
    def exitcode(self):
        return self._process.poll()


def run_cli(argv, log, go=None):
    return CLIProcess(argv, log, go)


def test_two_jobs_started_at_once_on_one_bucket(s3, images, expected, tmp_path):
    go = tmp_path / "go"
    output = "s3://jobs/concurrent"
    options = json.dumps(s3)
    processes = []
    for i, shard_size in enumerate((8, 4)):  # two different jobs
        argv = ["embed", *images, "-o", output, "--shard-size", str(shard_size)]
        argv += ["--batch-size", "4", "--storage-options", options, "--no-progress"]
        processes.append(run_cli([*argv, *COMMON], tmp_path / f"log{i}", go))
    for process in processes:  # both imported: start them at once
        process.wait_ready()
    go.write_text("go")
    for process in processes:
        process.join(timeout=300)
    codes = [process.exitcode for process in processes]
    logs = [(tmp_path / f"log{i}").read_text() for i in range(2)]
    assert sorted(codes) == [0, 2], logs
    winner = codes.index(0)
    assert "holds another embedding job" in logs[1 - winner], logs
    store = EmbeddingStore(output, storage_options=s3)
    assert store.manifest["shard_size"] == (8, 4)[winner] and store.is_complete
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_cli_takes_urls_and_one_storage_options(s3, images, expected, tmp_path):
    options = json.dumps(s3)
    output = "s3://jobs/from-urls"
    argv = ["embed", "s3://photos/img-00.jpg", "s3://photos/", "-o", output]
    argv += ["--storage-options", options, "--batch-size", "4", "--no-progress"]
    assert cli_main([*argv, *COMMON]) == 0
    store = EmbeddingStore(output, storage_options=s3)
    names = sorted(Path(path).name for path in images if os.path.exists(path))
    inputs = list(store.inputs())
    assert inputs == ["s3://photos/img-00.jpg"] + [f"s3://photos/{n}" for n in names]
    by_name = {Path(path).name: row for path, row in zip(images, expected)}
    with pytest.warns(UserWarning, match="could not be read"):
        got = store.to_numpy(on_error="nan")  # the corrupt file is an error row
    for row, url in enumerate(inputs):
        if url.endswith("corrupt.jpg"):
            assert np.isnan(got[row]).all()
        else:
            np.testing.assert_allclose(got[row], by_name[Path(url).name], atol=1e-6)


def test_a_missing_bucket_is_named(s3, images, capsys):
    options = json.dumps(s3)
    argv = ["embed", images[0], "-o", "s3://no-such-bucket/run"]
    assert cli_main([*argv, "--storage-options", options, *COMMON]) == 2
    assert "the bucket 'no-such-bucket'" in capsys.readouterr().err


def test_a_store_that_never_answers_costs_seconds(s3, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        silent = {
            **s3,
            "client_kwargs": {
                **s3["client_kwargs"],
                "endpoint_url": f"http://127.0.0.1:{port}",
            },
        }
        forget_hosts()
        featurizer = CLIPFeaturizer(
            **TINY, batch_size=BATCH_SIZE, timeout=1, storage_options=silent
        )
        started = time.monotonic()
        urls = ["s3://photos/img-00.jpg", "s3://photos/img-01.png"]
        with pytest.warns(UserWarning, match="2 error rows"):
            store = embed_to_parquet(featurizer, urls, tmp_path / "out")
        assert time.monotonic() - started < 60
        assert {kind for kind, _ in kinds_of(store).values()} == {TRANSIENT}
        forget_hosts()


def test_ctrl_c_then_resume(images, expected, tmp_path):
    """SIGINT to a running ``sklearn-clip embed``: exit 130, one line, no
    traceback; the same command then finishes the job, keeping the shards
    written before."""
    server = ImageServer(Path(images[0]).parent, delay=0.15)
    try:
        names = [Path(path).name for path in images]
        listing = tmp_path / "urls.txt"
        listing.write_text("\n".join(server.url(name) for name in names))
        output = tmp_path / "store"
        argv = ["embed", str(listing), "-o", str(output), "--shard-size", "4"]
        argv += ["--batch-size", "4", "--no-progress", *COMMON]
        process = run_cli(argv, tmp_path / "log")
        deadline = time.monotonic() + 120
        while not (output.exists() and part_times(output)):
            assert process.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGINT)
        process.join(timeout=120)
        err = (tmp_path / "log").read_text()
        assert process.exitcode == 130, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "run the same command again to resume" in lines[0]
        kept = part_times(output)
        assert 0 < len(kept) < 8  # interrupted midway
        done = run_cli(argv, tmp_path / "log2")
        done.join(timeout=300)
        assert done.exitcode == 0, (tmp_path / "log2").read_text()
        after = part_times(output)
        assert {name: after[name] for name in kept} == kept  # not recomputed
        store = EmbeddingStore(output)
        with pytest.warns(UserWarning, match="could not be read"):
            got = store.to_numpy(on_error="nan")
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    finally:
        server.stop()
