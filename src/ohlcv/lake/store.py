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


class RemoteReadError(OhlcvError):
    """An object-store lake file that could not be fetched (throttling, a dropped connection, an expired
    token): the build stops rather than count the file as unreadable and call the result up to date."""


# what an object store's transport and authorisation failures say (Polars' cloud reader wraps them in its
# own exception types); a corrupt or foreign file says none of these
_TRANSPORT = re.compile(r"(?i)object-store error|generic \w+ error|\brequest\b|connect|timed? ?out|token|credential|throttl|slow ?down|"
                        r"access ?denied|forbidden|unauthori[sz]ed|\b(403|429|500|502|503|504)\b|http")


def read_failure(path, exc: Exception) -> RemoteReadError | None:
    """For a file of an object-store lake, the error that stops the build when ``exc`` is a transport or
    authorisation failure (None for a local file, or a file that was fetched and failed to parse)."""
    if not isinstance(path, RemoteFile):
        return None
    if not (isinstance(exc, OSError) or _TRANSPORT.search(str(exc))):
        return None
    return RemoteReadError(f"{path}: cannot fetch ({_reason(exc)}); the object store failed or refused the "
                           "request: check the credentials and retry the build")


def scheme_of(text: str) -> str:
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(lake) -> bool:
    return isinstance(lake, str) and scheme_of(lake) in SCHEMES


def local_target(where, command: str) -> Path:
    """The local folder a lake writer (``ohlcv lake ingest``/``sample``) writes to; an object store's URL —
    also as a path, where ``s3://b`` became ``s3:/b`` — is one line saying to write locally and upload."""
    text = str(where)
    scheme = text.split(":/", 1)[0].lower() if ":/" in text else ""
    if scheme in SCHEMES:
        url = text if "://" in text else text.replace(":/", "://", 1)
        bucket = url.split("://", 1)[1]
        copy = {"s3": f"aws s3 sync DIR s3://{bucket}", "gs": f"gcloud storage rsync -r DIR gs://{bucket}"}.get(
            {"s3a": "s3", "gcs": "gs"}.get(scheme, scheme), "azcopy sync DIR https://ACCOUNT.blob.core.windows.net/...")
        raise OhlcvError(f"{url}: `ohlcv lake {command}` writes a local folder; write the lake to a folder here "
                         f"and copy it to object storage (e.g. `{copy}`)")
    return Path(text).expanduser()


def lake_root(text: str) -> Path | str:
    """A lake named in a profile or on the command line: a URL for an object store, else a local folder
    (made absolute, so that every Ray node and every saved profile names the same one).

    A URL carrying a user name, a password or a query (``s3://KEY:SECRET@bucket``, ``?X-Amz-Security-Token=``)
    is refused: it would be saved with the profile, the manifest and the logs; credentials come from the
    environment."""
    if "://" in text:
        scheme = scheme_of(text)
        if scheme not in SCHEMES:
            from ohlcv.errors import ConfigError

            raise ConfigError(f"'{safe_url(text)}': lakes are local folders or s3:// gs:// az:// URLs", key="data.lake")
        if carries_credentials(text):
            from ohlcv.errors import ConfigError

            family = FAMILY.get(scheme, scheme)
            raise ConfigError(f"'{safe_url(text)}...' carries a user name, password or query; give the bare URL and "
                              f"the credentials in the environment ({CREDENTIALS[family]})", key="data.lake")
        return text.rstrip("/")
    return Path(text).expanduser().resolve()


FAMILY = {"s3a": "s3", "gcs": "gs", "azure": "az", "abfs": "az", "abfss": "az"}


def _netloc(text: str) -> tuple[str, str]:
    """A URL's authority as written (case kept: bucket names are case-sensitive on some stores) and the
    rest; ``abfs[s]://container@account.dfs.core.windows.net`` names a container, not a user."""
    rest = text.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    return netloc, path


def carries_credentials(text: str) -> bool:
    """Whether an object-store URL holds a user name, password, query or fragment."""
    netloc, path = _netloc(text)
    if "?" in text or "#" in text:
        return True
    if "@" not in netloc:
        return False
    user = netloc.rsplit("@", 1)[0]
    return not (scheme_of(text) in ("abfs", "abfss") and ":" not in user)


def safe_url(text: str) -> str:
    """A URL fit for a message: without user info (an abfs container is kept), query or fragment."""
    if "://" not in text:
        return text
    netloc, path = _netloc(text.split("?", 1)[0].split("#", 1)[0])
    if "@" in netloc and carries_credentials(f"{scheme_of(text)}://{netloc}"):
        netloc = netloc.rsplit("@", 1)[1]
    return f"{text.split('://', 1)[0]}://{netloc}" + (f"/{path}" if path else "")


def lake_label(lake) -> str:
    """The lake as recorded in a manifest: a folder's absolute path, or the URL (credentials never in it:
    :func:`lake_root` refuses them)."""
    if not is_remote(lake):
        return str(Path(lake).resolve())
    return safe_url(lake)


def file_stamp(path, lake) -> str:
    """What identifies a lake file's version, for the build's fingerprint."""
    if isinstance(path, RemoteFile):
        return f"{path}:{path.size}:{path.version}"
    try:  # strings, not Path objects: a lake of 100k month files is stamped in a fraction of a second
        text, root = str(path), os.path.join(str(lake), "")
        stat = os.stat(text)
        relative = text[len(root):] if text.startswith(root) else Path(path).relative_to(lake)
        return f"{relative}:{stat.st_size}:{stat.st_mtime_ns}"
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
    family = FAMILY.get(scheme_of(url), scheme_of(url))
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
