"""Embedding jobs under real faults, on loopback only: an HTTP server that
goes down and comes back, one that fails each first request, a socket that
accepts and never answers, an old shard without error kinds, a failed first
run. Each test checks that every input ends as an embedding or as an error
row with its reason and kind, and that a re-run repairs what was transient.
"""

import errno
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip import CLIPFeaturizer
from sklearn_clip._cli import main as cli_main
from sklearn_clip._remote import (
    PERMANENT,
    TRANSIENT,
    check_timeout,
    failure_kind,
    forget_hosts,
)
from sklearn_clip.distributed import EmbeddingStore, embed_to_parquet

from ..conftest import TINY
from .conftest import BATCH_SIZE, SHARD_SIZE, part_times

pytest.importorskip("pyarrow")
pytest.importorskip("aiohttp")

pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


class ImageServer(http.server.ThreadingHTTPServer):
    """Serves the files of ``folder``; ``fail_first`` answers the first GET
    of each path with 503; ``delay`` seconds before each answer."""

    daemon_threads = True

    def __init__(self, folder, port=0, fail_first=False, delay=0.0):
        self.folder, self.fail_first, self.delay = Path(folder), fail_first, delay
        self.requests = {}
        super().__init__(("127.0.0.1", port), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, name):
        return f"http://127.0.0.1:{self.server_port}/{name}"

    def stop(self):
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        name = self.path.lstrip("/").split("?")[0]
        server.requests[name] = server.requests.get(name, 0) + 1
        time.sleep(server.delay)
        path = server.folder / name
        if server.fail_first and server.requests[name] == 1:
            code, data = 503, b""
        elif path.is_file():
            code, data = 200, path.read_bytes()
        else:
            code, data = 404, b""
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kinds_of(store):
    """``{row: (kind, reason)}`` of the store's error rows."""
    found = {}
    for shard in range(store.n_shards):
        table = store.read_shard(shard, ["row", "error", "error_kind"])
        for row, error, kind in zip(
            table.column("row").to_pylist(),
            table.column("error").to_pylist(),
            table.column("error_kind").to_pylist(),
        ):
            if error is not None:
                found[row] = (kind, error)
    return found


def test_failures_are_sorted_into_transient_and_permanent():
    class Response(Exception):  # as aiohttp's ClientResponseError
        def __init__(self, status):
            self.status = status

    class ClientError(Exception):  # as botocore's
        def __init__(self, code, status):
            self.response = {
                "Error": {"Code": code},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }

    wrapped = FileNotFoundError("http://host/a.png")
    wrapped.__cause__ = Response(503)  # fsspec raises FileNotFoundError from
    transient = [
        TimeoutError(),
        ConnectionRefusedError(),
        PermissionError("AccessDenied"),
        OSError(errno.EBUSY, "SlowDown"),
        Response(500),
        Response(429),
        Response(403),
        ClientError("SlowDown", 503),
        ClientError("ExpiredToken", 400),
        type("EndpointConnectionError", (Exception,), {})(),
        type("ReadTimeoutError", (Exception,), {})(),
        wrapped,
    ]
    permanent = [
        FileNotFoundError("no such file"),
        IsADirectoryError(),
        ValueError("not an image file Pillow can read"),
        Response(404),
        ClientError("NoSuchKey", 404),
    ]
    assert [failure_kind(e) for e in transient] == [TRANSIENT] * len(transient)
    assert [failure_kind(e) for e in permanent] == [PERMANENT] * len(permanent)
    assert check_timeout(5) == (5.0, 5.0) and check_timeout((1, 9)) == (1.0, 9.0)
    for bad in (0, -1, "5", (1, 2, 3), True):
        with pytest.raises(ValueError, match="timeout"):
            check_timeout(bad)


def test_server_down_then_back_every_row_recorded_and_repaired(
    featurizer, images, expected, tmp_path
):
    folder = Path(images[0]).parent
    port = free_port()
    urls = [f"http://127.0.0.1:{port}/{Path(path).name}" for path in images]
    output = tmp_path / "store"
    job = CLIPFeaturizer(**TINY, batch_size=BATCH_SIZE, timeout=2)
    # Down: nothing listens on the port.
    with pytest.warns(UserWarning, match="29 rows: 0 embedded, 29 error rows"):
        store = embed_to_parquet(job, urls, output, shard_size=SHARD_SIZE)
    summary = store.summary()
    assert (summary["transient"], summary["permanent"]) == (29, 0)
    assert sorted(kinds_of(store)) == list(range(29))  # every row, none lost
    assert {kind for kind, _ in kinds_of(store).values()} == {TRANSIENT}
    # Back up on the same port: the same call repairs every transient row.
    server = ImageServer(folder, port=port)
    try:
        store = embed_to_parquet(job, urls, output, shard_size=SHARD_SIZE)
        summary = store.summary()
        assert (summary["embedded"], summary["transient"]) == (27, 0)
        assert summary["causes"] == {
            PERMANENT: {"ValueError": 1, "FileNotFoundError": 1}
        }
        errors = kinds_of(store)
        assert sorted(errors) == [5, 17]
        assert {kind for kind, _ in errors.values()} == {PERMANENT}
        with pytest.warns(UserWarning, match="could not be read"):
            got = store.to_numpy(on_error="nan")
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        # Permanent errors are not tried again; retry_errors="all" tries them.
        before = part_times(output)
        served = sum(server.requests.values())
        embed_to_parquet(job, urls, output, shard_size=SHARD_SIZE)
        assert part_times(output) == before and sum(server.requests.values()) == served
        embed_to_parquet(job, urls, output, shard_size=SHARD_SIZE, retry_errors="all")
        after = part_times(output)
        changed = {name for name in before if before[name] != after[name]}
        assert changed == {"part-000000.parquet", "part-000002.parquet"}
        assert sum(server.requests.values()) == served + 2  # only those two rows
    finally:
        server.stop()


def test_transient_failures_are_retried_within_the_run(
    featurizer, images, expected, tmp_path
):
    server = ImageServer(Path(images[0]).parent, fail_first=True)
    try:
        urls = [server.url(Path(path).name) for path in images]
        job = CLIPFeaturizer(**TINY, batch_size=BATCH_SIZE, timeout=5)
        store = embed_to_parquet(job, urls, tmp_path / "s", shard_size=SHARD_SIZE)
        assert sorted(kinds_of(store)) == [5, 17]  # only the permanent ones
        with pytest.warns(UserWarning, match="could not be read"):
            got = store.to_numpy(on_error="nan")
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert server.requests[Path(images[0]).name] == 2  # a 503, then the file
    finally:
        server.stop()


@pytest.fixture
def silent_host():
    """A socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        forget_hosts()
        yield listener.getsockname()[1]
    forget_hosts()


def test_a_host_that_never_answers_costs_seconds(silent_host, tmp_path, capsys):
    urls = [f"http://127.0.0.1:{silent_host}/{i}.png" for i in range(3)]
    started = time.monotonic()
    with pytest.raises(ValueError, match="no answer within the timeout"):
        CLIPFeaturizer(**TINY, timeout=1).fit_transform(urls)
    assert time.monotonic() - started < 30
    # The CLI: --timeout, every row a transient error row, exit status 3.
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls))
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    started = time.monotonic()
    argv = ["embed", str(listing), "-o", str(tmp_path / "out"), "--timeout", "1"]
    assert cli_main([*argv, *common, "--no-progress"]) == 3
    assert time.monotonic() - started < 60
    captured = capsys.readouterr()
    assert "3 rows: 0 embedded, 3 error rows (transient: 3 TimeoutError)" in (
        captured.out
    )
    assert "run the same command again to retry them" in captured.err


def test_shards_without_error_kinds_still_read_and_are_repaired_once(
    featurizer, images, expected, tmp_path
):
    import pyarrow.parquet as pq

    output = tmp_path / "store"
    embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    # Shard 0 as sklearn-clip 0.2 wrote it: no error_kind column.
    first = output / "part-000000.parquet"
    table = pq.read_table(first)
    old = table.drop(["error_kind"]).replace_schema_metadata(table.schema.metadata)
    pq.write_table(old, first, write_page_checksum=True)
    store = EmbeddingStore(output)
    assert store.summary()["transient"] == 1  # row 5: kind unknown
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)
    before = part_times(output)
    store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    after = part_times(output)
    assert {name for name in before if before[name] != after[name]} == {first.name}
    assert kinds_of(store)[5][0] == PERMANENT and store.summary()["transient"] == 0
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(store.to_numpy(on_error="nan"), expected)


def test_a_failed_first_run_does_not_claim_the_folder(
    featurizer, images, expected, tmp_path, capsys
):
    output = tmp_path / "store"
    typo = CLIPFeaturizer(TINY["model"], pretrained="laion2b_typo", device="cpu")
    with pytest.raises(ValueError, match="laion2b_typo"):
        embed_to_parquet(typo, images, output, shard_size=SHARD_SIZE)
    assert not os.path.exists(output / "_manifest.json")
    store = embed_to_parquet(featurizer, images, output, shard_size=SHARD_SIZE)
    assert store.is_complete
    # A folder that holds another job: one differing field per line.
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    argv = ["embed", *images[:3], "-o", str(output), "--shard-size", "4", *common]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "\n  shard_size: 8 there, 4 now\n" in err
    assert "\n  n_inputs: 29 there, 3 now\n" in err


def test_empty_output_and_interrupt_exit_codes(featurizer, images, monkeypatch, capsys):
    with pytest.raises(ValueError, match="output_dir is empty"):
        embed_to_parquet(featurizer, images, "")
    common = ["--model", TINY["model"], "--pretrained", "none", "--device", "cpu"]
    assert cli_main(["embed", images[0], "-o", "", *common]) == 2
    assert "empty" in capsys.readouterr().err

    from sklearn_clip import _bench

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(_bench, "run", interrupted)
    assert cli_main(["bench", "x.npz", "--out", "results"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "interrupted" in err and "run the same command again" in err
