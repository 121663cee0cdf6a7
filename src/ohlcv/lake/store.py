"""Where a lake lives: a local folder, or an object store (``s3://``, ``gs://``, ``az://``).

An object-store lake is listed with ``obstore`` (the ``ohlcv[s3]`` extra: a
few paged LIST requests per selected symbol, never a read) and its files are
read by Polars' own cloud reader. Both take their credentials and endpoint
from the standard environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP`` for an ``http://`` endpoint; ``GOOGLE_APPLICATION_CREDENTIALS``;
``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_ACCOUNT_KEY``, ...): nothing
secret is ever written to a profile or a manifest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ohlcv.errors import OhlcvError

SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss")
INSTALL = "pip install 'ohlcv[s3]'"
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION / AWS_ENDPOINT_URL",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "az": "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
}


class RemoteFile(str):
    """An object's URL, with the size and version the listing gave (they enter the build's fingerprint,
    as a local file's size and modification time do)."""

    size: int = 0
    version: str = ""

    def __new__(cls, url: str, size: int = 0, version: str = "") -> "RemoteFile":
        value = super().__new__(cls, url)
        value.size, value.version = size, version
        return value

    def __reduce__(self):  # pickled (to a Ray task) with its listing facts
        return RemoteFile, (str(self), self.size, self.version)


def scheme_of(text: str) -> str:
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(lake) -> bool:
    return isinstance(lake, str) and scheme_of(lake) in SCHEMES


def lake_root(text: str) -> Path | str:
    """A lake named in a profile or on the command line: a URL for an object store, else a local folder."""
    if "://" in text:
        if scheme_of(text) not in SCHEMES:
            from ohlcv.errors import ConfigError

            raise ConfigError(f"'{text}': lakes are local folders or s3:// gs:// az:// URLs", key="data.lake")
        return lake_label(text.rstrip("/"))  # credentials come from the environment, never from the URL
    return Path(text).expanduser()


def lake_label(lake) -> str:
    """The lake as recorded in a manifest: a folder's absolute path, or the URL without any user name,
    password or query (where credentials could hide)."""
    if not is_remote(lake):
        return str(Path(lake).resolve())
    parts = urlsplit(lake)
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def file_stamp(path, lake) -> str:
    """What identifies a lake file's version, for the build's fingerprint."""
    if isinstance(path, RemoteFile):
        return f"{path}:{path.size}:{path.version}"
    try:
        stat = Path(path).stat()
        return f"{Path(path).relative_to(lake)}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        return f"{path}:gone"


def open_store(url: str):
    """An obstore store rooted at ``url``, configured from the environment; one line saying how to install
    obstore when it is missing."""
    from datetime import timedelta

    try:
        from obstore.store import from_url
    except ImportError:
        raise OhlcvError(f"{lake_label(url)}: lakes on object storage need obstore to list them: {INSTALL}") from None
    try:  # a few quick retries: a wrong endpoint or bucket is reported in seconds, not after minutes
        return from_url(url, retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=20)})
    except Exception as exc:  # noqa: BLE001 - a malformed URL or configuration: one line
        raise OhlcvError(f"{lake_label(url)}: {_reason(exc)}") from None


def listing_error(url: str, exc: Exception) -> OhlcvError:
    """One line for a lake that cannot be listed: the bucket, the reason, the variables to check."""
    family = {"s3a": "s3", "gcs": "gs", "azure": "az", "abfs": "az", "abfss": "az"}.get(scheme_of(url), scheme_of(url))
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    hint = ("; an http:// endpoint also needs AWS_ALLOW_HTTP=true"
            if family == "s3" and endpoint.startswith("http://") and not os.environ.get("AWS_ALLOW_HTTP") else "")
    return OhlcvError(f"{lake_label(url)}: cannot list the lake ({_reason(exc)}); check the bucket and "
                      f"{CREDENTIALS.get(family, 'the credentials')} in the environment{hint}")


def _reason(exc: Exception) -> str:
    """The service's error code when the message carries one (NoSuchBucket, InvalidAccessKeyId, ...), else
    the message's first line."""
    text = str(exc)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    if code:
        return code.group(1)
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
