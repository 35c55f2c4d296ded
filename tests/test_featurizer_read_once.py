"""CLIPFeaturizer(cache_dir=...) reads each input once: the bytes it hashes
for the cache key are the bytes it decodes, so a file or object rewritten
meanwhile can never file one content's embedding under another's key."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import sklearn_clip._featurizer as featurizer_module
from sklearn_clip import CLIPFeaturizer, ImageBytes
from sklearn_clip._embedding_cache import EmbeddingCache, content_key
from sklearn_clip._images import RemoteFile

from .conftest import TINY

pytestmark = pytest.mark.filterwarnings("ignore:pretrained=None")


def png_bytes(colour, size=(24, 20)):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


class Objects(BaseHTTPRequestHandler):
    """Serves ``server.objects`` (path -> bytes) and counts the requests."""

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body):
        server = self.server
        with server.lock:
            server.requests.append((self.command, self.path))
            data = server.objects.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_objects():
    pytest.importorskip("aiohttp")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Objects)
    server.objects, server.requests, server.lock = {}, [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make(tmp_path, **params):
    params = {"batch_size": 2, "num_workers": 0, **params}
    return CLIPFeaturizer(**TINY, cache_dir=tmp_path / "cache", **params)


def test_a_cached_url_costs_the_requests_of_one_plain_read(http_objects, tmp_path):
    server, base = http_objects
    urls = []
    for i in range(5):
        server.objects[f"/{i}.png"] = png_bytes((40 * i, 10, 200))
        urls.append(f"{base}/{i}.png")
    RemoteFile(urls[0]).read()
    one_read = len(server.requests)
    assert one_read >= 1
    server.requests.clear()
    cold = make(tmp_path).fit_transform(urls)
    per_url = {url: 0 for url in urls}
    for _, path in server.requests:
        per_url[base + path] += 1
    assert per_url == {url: one_read for url in urls}  # twice as many before
    # A warm run reads each object once more (to hash it), and embeds nothing.
    server.requests.clear()
    warm = make(tmp_path).fit_transform(urls)
    assert len(server.requests) == len(urls) * one_read
    np.testing.assert_array_equal(cold, warm)
    plain = CLIPFeaturizer(**TINY, batch_size=2, num_workers=0).fit_transform(urls)
    np.testing.assert_allclose(cold, plain, atol=1e-6)


@pytest.fixture
def rewrite_after_hashing(monkeypatch):
    """Run ``rewrite()`` right after the featurizer hashes its first input
    for the cache key: the moment a second read would see other bytes."""
    state = {"rewrite": None}
    original = featurizer_module.content_key

    def hashing(item):
        key = original(item)
        if state["rewrite"] is not None:
            state.pop("rewrite")()
            state["rewrite"] = None
        return key

    monkeypatch.setattr(featurizer_module, "content_key", hashing)
    return state


def check_the_cache_is_exact(tmp_path, got, first_bytes, second_bytes):
    """The returned embedding and the cache entries are those of the bytes
    that were hashed (A), and B has no entry under A's key."""
    reference = CLIPFeaturizer(**TINY, batch_size=2, num_workers=0)
    expected_a, expected_b = reference.fit_transform(
        [ImageBytes(first_bytes), ImageBytes(second_bytes)]
    )
    assert not np.allclose(expected_a, expected_b, atol=1e-3)
    np.testing.assert_allclose(got, expected_a, atol=1e-6)
    featurizer = make(tmp_path)
    clip = featurizer_module.load_clip(**TINY)
    with EmbeddingCache(
        featurizer.cache_dir, featurizer._namespace(clip), got.shape[0]
    ) as cache:
        stored = cache.get([content_key(ImageBytes(first_bytes))])
    (entry,) = stored.values()
    np.testing.assert_allclose(entry, expected_a, atol=1e-6)


def test_a_file_rewritten_between_reads_is_filed_under_its_own_key(
    tmp_path, rewrite_after_hashing
):
    first, second = png_bytes((250, 0, 0)), png_bytes((0, 0, 250), size=(30, 12))
    path = tmp_path / "photo.png"
    path.write_bytes(first)
    rewrite_after_hashing["rewrite"] = lambda: path.write_bytes(second)
    (got,) = make(tmp_path).fit_transform([str(path)])
    assert path.read_bytes() == second  # the rewrite happened
    check_the_cache_is_exact(tmp_path, got, first, second)


def test_an_object_rewritten_between_reads_is_filed_under_its_own_key(
    http_objects, tmp_path, rewrite_after_hashing
):
    server, base = http_objects
    first, second = png_bytes((250, 0, 0)), png_bytes((0, 0, 250), size=(30, 12))
    server.objects["/photo.png"] = first

    def rewrite():
        server.objects["/photo.png"] = second

    rewrite_after_hashing["rewrite"] = rewrite
    (got,) = make(tmp_path).fit_transform([f"{base}/photo.png"])
    assert server.objects["/photo.png"] == second
    check_the_cache_is_exact(tmp_path, got, first, second)


def test_unreadable_inputs_keep_their_reasons(tmp_path, http_objects):
    server, base = http_objects
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes((1, 2, 3)))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    items = [str(good), str(tmp_path / "missing.png"), str(empty), f"{base}/gone.png"]
    with pytest.warns(UserWarning, match="3 of 4 inputs could not be read") as caught:
        got = make(tmp_path, on_error="nan").fit_transform(items)
    message = str(caught[0].message)
    assert "missing.png': FileNotFoundError: file does not exist" in message
    assert "empty.png': ValueError: file is empty" in message
    assert "gone.png'" in message
    assert np.isnan(got[1:]).all() and np.isfinite(got[0]).all()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_windows_of_inputs_give_one_calls_embeddings(
    tmp_path, monkeypatch, num_workers
):
    """Inputs are read in windows of whole batches (decoded by threads or
    DataLoader workers): a call over several windows, repeats across windows
    included, equals the uncached call."""
    monkeypatch.setattr(featurizer_module, "_CACHE_WINDOW_BATCHES", 1)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png_bytes((30 * i, 255 - 30 * i, 7)))
        paths.append(str(path))
    items = [*paths, paths[0], paths[3]]
    cached = make(tmp_path, num_workers=num_workers).fit_transform(items)
    plain = CLIPFeaturizer(**TINY, batch_size=2, num_workers=0).fit_transform(items)
    np.testing.assert_allclose(cached, plain, atol=1e-6)
    np.testing.assert_array_equal(cached[7], cached[0])
