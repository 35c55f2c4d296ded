"""Reading WebDataset tar archives as a stream of samples.

A WebDataset archive holds samples as consecutive files sharing a key: the
file name up to its first dot (``shard-000/000017.jpg`` and
``shard-000/000017.cls`` are sample ``shard-000/000017``). An archive is read
front to back, once, and never held in memory whole.
"""

import json
import os
import posixpath
import tarfile

from .._images import IMAGE_EXTENSIONS, FailedRead, ImageBytes, is_url

#: File extensions read as the sample's image (lower case, no dot).
IMAGE_SUFFIXES = frozenset(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)


def sample_key(member_name):
    """``(key, extension)`` of a member: ``("dir/0001", "jpg")`` for
    ``"dir/0001.jpg"``, ``("dir/0001", "seg.png")`` for ``"dir/0001.seg.png"``.
    """
    directory, base = posixpath.split(member_name)
    stem, _, extension = base.partition(".")
    return posixpath.join(directory, stem), extension.lower()


class DamagedArchiveError(ValueError):
    """A tar archive that is cut short or damaged: its shard fails (no
    prefix of it is ever kept as if it were the whole archive).
    """


def _open(url, storage_options):
    if is_url(url):
        import fsspec

        return fsspec.open(url, "rb", **(storage_options or {})).open()
    return open(url, "rb")


#: ``fsspec`` ``info`` entries that change when an object is rewritten
#: (S3 ETag and version, GCS generation and MD5, Azure etag, HTTP ETag).
_VERSION_KEYS = (
    "size",
    "ETag",
    "etag",
    "VersionId",
    "generation",
    "md5Hash",
    "LastModified",
    "last_modified",
    "mtime",
)


def archive_version(url, storage_options=None):
    """What identifies this version of the archive at ``url``, as a string:
    size, modification and change times (nanoseconds) of a local file, or
    the size, ETag / generation and modification time an object store
    reports. Taken before and after a shard reads the archive and compared
    on resume, so an archive rewritten since its shard was written is read
    again. One ``stat`` (or ``HEAD``) per archive.
    """
    if not is_url(url):
        stat = os.stat(url)
        fields = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "ctime_ns": stat.st_ctime_ns,
        }
    else:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        # Not from a listing cached by this process: the object as it is now.
        fs.invalidate_cache(path)
        info = fs.info(path)
        fields = {key: str(info[key]) for key in _VERSION_KEYS if key in info}
    return json.dumps(fields, sort_keys=True)


class _EndCheckedTarInfo(tarfile.TarInfo):
    """Records why the member headers ended: :mod:`tarfile` ends a stream
    quietly at a missing, cut or damaged header, where only a zero block
    (the end-of-archive marker) means the archive is whole.
    """

    @classmethod
    def fromtarfile(cls, tarfile_):
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            tarfile_.end_of_headers = exc
            raise


def _why_incomplete(archive):
    """Why the archive whose members were all read is not whole, or None."""
    end = getattr(archive, "end_of_headers", None)
    if isinstance(end, tarfile.EOFHeaderError):
        # The first zero block is read; POSIX ends an archive with two.
        second = archive.fileobj.read(tarfile.BLOCKSIZE)
        if len(second) == tarfile.BLOCKSIZE and second.count(0) == len(second):
            return None
        if len(second) < tarfile.BLOCKSIZE:
            return "it ends after one of its two end-of-archive blocks"
        return "a non-zero block follows its first end-of-archive block"
    if isinstance(end, tarfile.EmptyHeaderError):
        return "it ends without its end-of-archive blocks"
    if isinstance(end, tarfile.TruncatedHeaderError):
        return "it ends in the middle of a member header"
    if isinstance(end, tarfile.HeaderError):
        return f"a member header is damaged ({end})"
    return "its member headers ended unexpectedly"


def iter_tar_samples(url, storage_options=None):
    """Yield ``(key, item)`` per sample of the archive at ``url`` (a path or
    URL), in archive order: ``item`` is the :class:`ImageBytes` of its first
    image file, or a :class:`FailedRead` when it has none (the row is then
    an error row, never dropped). Files of other kinds are skipped unread.

    A link member (symbolic or hard) is not followed: when it is a sample's
    image, the sample is an error row saying so. An archive that is cut
    short (a partial copy: no end-of-archive blocks, a cut header or member)
    or has a damaged header raises :class:`DamagedArchiveError` once its
    readable members are yielded, so the caller fails the whole archive.
    """
    n_members = 0
    try:
        with (
            _open(url, storage_options) as raw,
            tarfile.open(
                fileobj=raw, mode="r|*", tarinfo=_EndCheckedTarInfo
            ) as archive,
        ):
            key, item, extensions = None, None, []
            for member in archive:
                n_members += 1
                if member.isdir():
                    continue
                member_key, extension = sample_key(member.name)
                if member_key != key:
                    if key is not None:
                        yield key, item or _no_image(url, key, extensions)
                    key, item, extensions = member_key, None, []
                extensions.append(extension)
                if (
                    item is not None
                    or extension.rpartition(".")[2] not in IMAGE_SUFFIXES
                ):
                    continue
                if member.isfile():
                    data = archive.extractfile(member).read()
                    item = ImageBytes(data, name=f"{url}#{member.name}")
                else:
                    item = _not_a_file(url, member)
            why = _why_incomplete(archive)
            if key is not None and why is None:
                yield key, item or _no_image(url, key, extensions)
    except tarfile.ReadError as exc:  # a member cut short, an unreadable start
        why = f"{exc} (cut short or damaged)"
    if why is not None:
        raise DamagedArchiveError(
            f"the tar archive {url} is incomplete or damaged after {n_members} "
            f"member(s): {why}. No row of it is kept; a partly copied archive "
            "is read again when the job is run again."
        )


def _not_a_file(url, member):
    if member.issym():
        what = f"a symbolic link to {member.linkname!r}"
    elif member.islnk():
        what = f"a hard link to {member.linkname!r}"
    else:
        what = "not a regular file (a device, FIFO or other special member)"
    return FailedRead(
        f"{url}#{member.name}",
        ValueError(
            f"the member {member.name!r} is {what}; links in archives are not "
            "followed: store the image file itself in the archive"
        ),
    )


def _no_image(url, key, extensions):
    return FailedRead(
        f"{url}#{key}",
        ValueError(
            f"no image file in this sample (files: {', '.join(extensions)}); "
            f"image extensions: {', '.join(sorted(IMAGE_SUFFIXES))}"
        ),
    )
