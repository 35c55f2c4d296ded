"""Tar archives that are cut short, damaged, hold links or change: the
archive's shard fails with its reason (never keeping a prefix of it as if it
were whole), links become error rows, and a re-run reads again any archive
that changed since its shard was written."""

import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sklearn_clip.distributed import (
    EmbeddingStore,
    ShardsFailedError,
    embed_to_parquet,
)
from sklearn_clip.distributed._tars import DamagedArchiveError, iter_tar_samples

from .conftest import make_tars, part_times

pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pretrained=None"),
    pytest.mark.filterwarnings("ignore:.*could not be read as images:UserWarning"),
]


@pytest.fixture(scope="module")
def archives(images, tmp_path_factory):
    return make_tars(images, tmp_path_factory.mktemp("tars"))


def cut_points(path):
    """Where a partial copy of the archive can end, by name: at a member
    boundary, in a header, in a member's data, in the padding after the last
    member, and between the two end-of-archive blocks.
    """
    with tarfile.open(path) as archive:
        members = archive.getmembers()
    last = members[-1]
    end_of_data = last.offset_data + last.size
    end_of_members = end_of_data + (-last.size % tarfile.BLOCKSIZE)
    return {
        "member boundary": members[6].offset,
        "mid-header": members[6].offset + 100,
        "mid-data": members[6].offset_data + members[6].size // 2,
        "in the last member's padding": end_of_data + 1,
        "no end-of-archive blocks": end_of_members,
        "one end-of-archive block": end_of_members + tarfile.BLOCKSIZE,
    }


CUTS = [
    "member boundary",
    "mid-header",
    "mid-data",
    "in the last member's padding",
    "no end-of-archive blocks",
    "one end-of-archive block",
]


@pytest.mark.parametrize("cut", CUTS)
def test_a_cut_archive_raises_after_its_readable_samples(archives, tmp_path, cut):
    tars, _ = archives
    data = Path(tars[0]).read_bytes()
    partial = tmp_path / "partial.tar"
    partial.write_bytes(data[: cut_points(tars[0])[cut]])
    with pytest.raises(DamagedArchiveError, match="incomplete or damaged"):
        list(iter_tar_samples(str(partial)))
    # The whole archive reads without complaint.
    assert len(list(iter_tar_samples(tars[0]))) == 10


def test_a_damaged_last_header_fails_the_archive(archives, tmp_path):
    tars, _ = archives
    with tarfile.open(tars[0]) as archive:
        last = archive.getmembers()[-1]
    data = bytearray(Path(tars[0]).read_bytes())
    data[last.offset + 10] ^= 0xFF  # in the name: the header checksum fails
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DamagedArchiveError, match="member header is damaged"):
        list(iter_tar_samples(str(damaged)))


@pytest.mark.parametrize("cut", ["member boundary", "mid-header"])
def test_a_cut_archive_fails_its_shard_and_the_rerun_embeds_it(
    featurizer, archives, tmp_path, cut
):
    tars, _ = archives
    copies = []
    for tar in tars:
        copies.append(str(tmp_path / Path(tar).name))
        shutil.copy(tar, copies[-1])
    data = Path(tars[1]).read_bytes()
    Path(copies[1]).write_bytes(data[: cut_points(tars[1])[cut]])
    output = tmp_path / "store"
    with pytest.raises(ShardsFailedError) as failed:
        embed_to_parquet(featurizer, copies, output)
    assert list(failed.value.failures) == [1]
    assert "DamagedArchiveError" in failed.value.failures[1]
    assert copies[1] in failed.value.failures[1]
    assert sorted(part_times(output)) == ["part-000000.parquet", "part-000002.parquet"]
    # The copy completes; the same call embeds that archive, and only it.
    before = part_times(output)
    shutil.copy(tars[1], copies[1])
    store = embed_to_parquet(featurizer, copies, output)
    after = part_times(output)
    assert {k: after[k] for k in before} == before
    assert store.n_inputs == 29
    reference = embed_to_parquet(featurizer, tars, tmp_path / "reference")
    with pytest.warns(UserWarning, match="could not be read"):
        np.testing.assert_array_equal(
            store.to_numpy(on_error="nan"), reference.to_numpy(on_error="nan")
        )


def linked_archive(images, path):
    """Samples 0-3: an image, a symbolic link to it, a hard link to it, a
    symbolic link with its label, then an image again."""
    data = Path(images[0]).read_bytes()
    with tarfile.open(path, "w") as archive:

        def add(name, payload=None, kind=tarfile.REGTYPE, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.size = 0 if payload is None else len(payload)
            archive.addfile(info, None if payload is None else io.BytesIO(payload))

        add("000000.jpg", data)
        add("000001.jpg", kind=tarfile.SYMTYPE, target="000000.jpg")
        add("000002.jpg", kind=tarfile.LNKTYPE, target="000000.jpg")
        add("000003.png", kind=tarfile.SYMTYPE, target="/etc/passwd")
        add("000003.cls", b"1")
        add("000004.jpg", data)
    return str(path)


def test_link_members_become_error_rows_with_their_reason(featurizer, images, tmp_path):
    tar = linked_archive(images, tmp_path / "links.tar")
    samples = list(iter_tar_samples(tar))
    assert [key for key, _ in samples] == [f"00000{i}" for i in range(5)]
    store = embed_to_parquet(featurizer, [tar], tmp_path / "store")
    assert store.n_inputs == 5
    errors = {row: why for row, _, why in store.errors()}
    assert sorted(errors) == [1, 2, 3]
    assert "a symbolic link to '000000.jpg'" in errors[1]
    assert "a hard link to '000000.jpg'" in errors[2]
    assert "a symbolic link to '/etc/passwd'" in errors[3]
    assert all("links in archives are not followed" in why for why in errors.values())
    with pytest.warns(UserWarning, match="could not be read"):
        X = store.to_numpy(on_error="nan")
    np.testing.assert_array_equal(X[0], X[4])
    assert np.isnan(X[1:4]).all()


def rewrite_without_last_sample(source, target):
    with tarfile.open(source) as archive:
        members = archive.getmembers()
        with tarfile.open(target, "w") as out:
            for member in members[:-2]:
                out.addfile(member, archive.extractfile(member))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_an_archive_rewritten_since_its_shard_is_read_again(
    featurizer, archives, tmp_path, keep_mtime
):
    tars, _ = archives
    copies = []
    for tar in tars:
        copies.append(str(tmp_path / Path(tar).name))
        shutil.copy(tar, copies[-1])
    output = tmp_path / "store"
    assert embed_to_parquet(featurizer, copies, output).n_inputs == 29
    before = part_times(output)
    # Rewritten: its last sample dropped (a re-packed archive). With
    # keep_mtime, the modification time is set back as ``cp -p`` would.
    stat = os.stat(copies[2])
    rewrite_without_last_sample(tars[2], copies[2] + ".new")
    os.replace(copies[2] + ".new", copies[2])
    if keep_mtime:
        os.utime(copies[2], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.warns(UserWarning, match="its archive changed since it was read"):
        store = embed_to_parquet(featurizer, copies, output)
    after = part_times(output)
    assert after["part-000002.parquet"] != before["part-000002.parquet"]
    assert {k: after[k] for k in ("part-000000.parquet", "part-000001.parquet")} == {
        k: before[k] for k in ("part-000000.parquet", "part-000001.parquet")
    }
    assert store.n_inputs == 28
    # Unchanged archives: a third run reads nothing again.
    embed_to_parquet(featurizer, copies, output)
    assert part_times(output) == after


def test_an_archive_changing_while_read_fails_its_shard(
    featurizer, archives, tmp_path, monkeypatch
):
    import sklearn_clip.distributed._worker as worker

    tars, _ = archives
    copy = str(tmp_path / "growing.tar")
    shutil.copy(tars[0], copy)
    original = worker.embed_tar

    def embed_then_append(featurizer, url):
        result = original(featurizer, url)
        with open(url, "ab") as handle:  # a writer appends meanwhile
            handle.write(b"\0" * tarfile.RECORDSIZE)
        return result

    monkeypatch.setattr(worker, "embed_tar", embed_then_append)
    with pytest.raises(ShardsFailedError, match="changed while it was read"):
        embed_to_parquet(featurizer, [copy], tmp_path / "store")
    assert not list((tmp_path / "store").glob("part-*.parquet"))
    monkeypatch.setattr(worker, "embed_tar", original)
    embed_to_parquet(featurizer, [copy], tmp_path / "store")
    assert EmbeddingStore(tmp_path / "store").n_inputs == 10
