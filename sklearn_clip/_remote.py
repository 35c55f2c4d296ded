"""Reading remote files: a timeout on every read, bounded retries of
transient failures, and the rule that tells transient failures from
permanent ones.

A failure is *transient* when trying again later may succeed: the network
or the host was down, a read timed out, the store answered 5xx or asked to
slow down, or the credentials were refused (they can be fixed). It is
*permanent* when the bytes are there and are not an image, or the file does
not exist.
"""

import errno
import random
import threading
import time
from numbers import Real

#: Seconds a remote read may wait to connect, and for each answer.
DEFAULT_TIMEOUT = 30.0
#: Tries of a remote read that fails transiently (the first included).
READ_ATTEMPTS = 3
#: Seconds before the second try; doubled before each further one (with
#: jitter, so that many readers do not retry in step), at most MAX_BACKOFF.
BACKOFF = 0.5
MAX_BACKOFF = 8.0

TRANSIENT = "transient"
PERMANENT = "permanent"
FAILURE_KINDS = (TRANSIENT, PERMANENT)

# OSError numbers that mean "try again later".
_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EBUSY,  # s3fs: SlowDown, 503
    errno.EAGAIN,
    errno.EIO,  # s3fs: an unrecognised error answer; local disks: a bad read
    getattr(errno, "EREMOTEIO", 121),  # s3fs: InternalError, 500
}
# Exception classes of fsspec's back ends (aiohttp, botocore, requests),
# matched by name so that none has to be imported.
_TRANSIENT_CLASS_NAMES = {
    "ClientConnectionError",
    "ClientConnectorError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "HTTPClientError",
    "IncompleteRead",
    "ResponseStreamingError",
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "FSTimeoutError",
}
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
# HTTP answers worth another try: timeouts, throttling, refused credentials
# (they can be fixed) and server errors.
_TRANSIENT_STATUS = {401, 403, 408, 425, 429}


def failure_kind(error):
    """:data:`TRANSIENT` or :data:`PERMANENT`: whether reading the input
    again later may succeed, judged from the exception and its causes.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _is_transient(error):
            return TRANSIENT
        error = error.__cause__ or error.__context__
    return PERMANENT


def _is_transient(error):
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & _TRANSIENT_CLASS_NAMES:
        return True
    status = getattr(error, "status", None)  # aiohttp's ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status in _TRANSIENT_STATUS
    response = getattr(error, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        http = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return (
            http >= 500
            or http in _TRANSIENT_STATUS
            or any(word in code for word in ("Throttl", "SlowDown", "Timeout"))
            or code in ("InternalError", "ServiceUnavailable", "ExpiredToken")
            or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
        )
    if isinstance(error, TimeoutError | ConnectionError | PermissionError):
        return True  # PermissionError: credentials or ACLs, which can be fixed
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def _is_timeout(error):
    return isinstance(error, TimeoutError) or any(
        "Timeout" in cls.__name__ for cls in type(error).__mro__
    )


def check_timeout(timeout):
    """``(connect, read)`` seconds from a number (both) or a pair."""
    if isinstance(timeout, Real) and not isinstance(timeout, bool):
        pair = (timeout, timeout)
    elif isinstance(timeout, tuple | list) and len(timeout) == 2:
        pair = tuple(timeout)
    else:
        raise ValueError(
            "timeout must be a number of seconds or a (connect, read) pair, got "
            f"{timeout!r}."
        )
    if not all(
        isinstance(value, Real) and not isinstance(value, bool) and value > 0
        for value in pair
    ):
        raise ValueError(f"timeout must hold positive seconds, got {timeout!r}.")
    return float(pair[0]), float(pair[1])


def protocol_of(url):
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def with_timeouts(url, storage_options=None, timeout=DEFAULT_TIMEOUT, *, own_retries):
    """The fsspec options of ``url`` with connect and read timeouts added
    (where the user set none) for S3 and HTTP(S); with ``own_retries``,
    the file system's own retry loops are turned off so that
    :func:`read_url`'s bounded ones are the only ones.

    Other protocols keep their options as given (their own timeouts apply).
    """
    options = dict(storage_options or {})
    connect, read = check_timeout(timeout)
    protocol = protocol_of(url)
    if protocol in ("s3", "s3a"):
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", connect)
        config.setdefault("read_timeout", read)
        if own_retries:
            config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
        options["config_kwargs"] = config
    elif protocol in ("http", "https"):
        import aiohttp

        client = dict(options.get("client_kwargs") or {})
        client.setdefault(
            "timeout",
            aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect, sock_read=read
            ),
        )
        options["client_kwargs"] = client
    return options


#: Inputs in a row that failed transiently on one host after which the
#: host counts as down: its further reads fail at once (transient error rows,
#: retried by a re-run) instead of each waiting for its timeouts...
DOWN_AFTER = 8
#: ...except one read every this many seconds, which finds it back up.
PROBE_EVERY = 30.0

_hosts_lock = threading.Lock()
# host -> (transient failures in a row, time of the last one)
_host_failures = {}


def host_of(url, storage_options=None):
    """What a URL's reads depend on: its endpoint and bucket or host."""
    endpoint = ((storage_options or {}).get("client_kwargs") or {}).get(
        "endpoint_url", ""
    )
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    return f"{protocol_of(url)}://{endpoint}/{netloc}"


def forget_hosts():
    """Forget which hosts were down: a new job (or transform call) tries
    each host again.
    """
    with _hosts_lock:
        _host_failures.clear()


class HostDownError(ConnectionError):
    """A host failed its last reads; this one was not tried."""


def read_url(url, storage_options=None, timeout=DEFAULT_TIMEOUT):
    """The bytes at ``url``, read through fsspec with timeouts (one request
    per try); a transient failure is tried again (:data:`READ_ATTEMPTS`
    tries in all, with exponential backoff), a permanent one raises at once.
    A host that failed :data:`DOWN_AFTER` inputs in a row is not tried
    (:class:`HostDownError`) until :data:`PROBE_EVERY` seconds have passed.
    """
    import fsspec

    host = host_of(url, storage_options)
    with _hosts_lock:
        failures, last = _host_failures.get(host, (0, 0.0))
    if failures >= DOWN_AFTER and time.monotonic() - last < PROBE_EVERY:
        raise HostDownError(
            f"not tried: {host} failed the last {failures} reads (timeouts or "
            "connection errors); it is tried again every "
            f"{PROBE_EVERY:.0f} s, and a re-run retries this input"
        )
    options = with_timeouts(url, storage_options, timeout, own_retries=True)
    for attempt in range(READ_ATTEMPTS):
        try:
            fs, path = fsspec.core.url_to_fs(url, **options)
            if protocol_of(url) in ("s3", "s3a"):
                # s3fs's own loop (5 tries) off: this instance, keyed by
                # the options above, serves only these reads.
                fs.retries = 1
            data = fs.cat_file(path)
        except Exception as exc:
            if failure_kind(exc) != TRANSIENT:
                raise
            if attempt + 1 == READ_ATTEMPTS:
                with _hosts_lock:
                    failures = _host_failures.get(host, (0, 0.0))[0]
                    _host_failures[host] = (failures + 1, time.monotonic())
                if _is_timeout(exc):  # their messages are often empty
                    connect, read = check_timeout(timeout)
                    raise TimeoutError(
                        f"no answer within the timeout ({connect:g} s to connect, "
                        f"{read:g} s per read) in {READ_ATTEMPTS} tries"
                    ) from exc
                raise
            wait = min(MAX_BACKOFF, BACKOFF * 2**attempt)
            time.sleep(wait * random.uniform(0.5, 1.0))
        else:
            with _hosts_lock:
                _host_failures.pop(host, None)
            return data
    raise AssertionError("unreachable")  # pragma: no cover
