"""Lakes on object storage (``--lake s3://bucket/prefix``), against an S3-compatible server started here.

The server is moto's (``pip install "moto[server]"``): from this interpreter when moto is installed in it,
else the ``moto_server`` named by ``OHLCV_MOTO_SERVER`` (CI keeps moto in a venv of its own: its botocore
pins would change this stack's packages).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import pytest

from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
from ohlcv.config import load_profile
from ohlcv.lake.sample import generate_sample_lake
from ohlcv.lake.store import lake_label, lake_root, listing_error

SECRET = "ohlcv-test-secret-never-written"
BUILD = ("features.enabled=[log_return,class_return]", "data.cleaning.min_length=100")


def _server_command(port: int) -> list[str] | None:
    if importlib.util.find_spec("moto") is not None:
        return [sys.executable, "-m", "moto.server", "-p", str(port)]
    named = os.environ.get("OHLCV_MOTO_SERVER") or shutil.which("moto_server")
    return [named, "-p", str(port)] if named else None


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port, with request recording on; yields its endpoint URL."""
    if importlib.util.find_spec("obstore") is None:
        pytest.skip("lakes on object storage need obstore: pip install 'ohlcv[s3]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = _server_command(port)
    if command is None:
        pytest.skip('needs an S3-compatible server: pip install "moto[server]" (or OHLCV_MOTO_SERVER=path/to/moto_server)')
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                  env={**os.environ, "MOTO_ENABLE_RECORDING": "True"})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"moto server did not start: {log.read_text()[-500:]}")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def aws_env(s3, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "ohlcv-test", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": s3, "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="module")
def uploaded(s3, tmp_path_factory):
    """A small sample lake, on local disk and uploaded to s3://lake-bucket/lakes/hourly."""
    from obstore.store import S3Store
    import obstore

    lake = generate_sample_lake(tmp_path_factory.mktemp("s3lake") / "lake", symbols_per_class=2, bars=700, seed=6).root
    urllib.request.urlopen(urllib.request.Request(f"{s3}/lake-bucket", method="PUT"))
    store = S3Store("lake-bucket", prefix="lakes/hourly", endpoint=s3, region="us-east-1", access_key_id="x",
                    secret_access_key="x", client_options={"allow_http": True})
    for path in sorted(lake.rglob("*.parquet")):
        obstore.put(store, path.relative_to(lake).as_posix(), path.read_bytes())
    return lake, "s3://lake-bucket/lakes/hourly"


def _build(lake, out: Path, *extra: str):
    cfg = load_profile("hourly", [f"data.lake={lake}", f"data.dataset={out}", *BUILD, *extra]).cfg
    return IterativeFinancialDatasetBuilder(cfg).run()


def _recorded_gets(endpoint: str) -> list[str]:
    """The object keys and listing prefixes the server was asked for since the recording was reset."""
    lines = urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording").read().decode().splitlines()
    return [unquote(json.loads(line)["url"].split(endpoint, 1)[1]) for line in lines
            if line.strip() and json.loads(line)["method"] in ("GET", "HEAD")]


def _record(endpoint: str, action: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method="POST"))


def test_a_lake_on_s3_builds_the_same_dataset_as_the_local_lake(aws_env, uploaded, tmp_path):
    local_lake, url = uploaded
    local = _build(local_lake, tmp_path / "local")
    remote = _build(url, tmp_path / "remote")
    assert remote.manifest["content_hash"] == local.manifest["content_hash"]
    assert remote.manifest["series"] == local.manifest["series"] == 6
    assert remote.manifest["lake"] == url
    assert SECRET not in (tmp_path / "remote" / "manifest.json").read_text()
    assert _build(url, tmp_path / "remote").up_to_date  # the listing's sizes and versions fingerprint the lake


def test_symbol_and_date_selection_read_only_their_partitions(aws_env, uploaded, tmp_path):
    _, url = uploaded
    _record(aws_env, "reset-recording")
    _record(aws_env, "start-recording")
    try:
        built = _build(url, tmp_path / "one", "data.symbols=[CRY001]", "data.start=2023-02-01")
    finally:
        _record(aws_env, "stop-recording")
    assert [item["item_id"] for item in built.manifest["items"]] == ["crypto/CRY001"]
    requests = _recorded_gets(aws_env)
    objects = [r for r in requests if not r.startswith("/lake-bucket?")]
    listings = [r for r in requests if r.startswith("/lake-bucket?")]
    assert objects and all("/symbol=CRY001/" in r for r in objects), objects
    assert not any("/month=01/" in r for r in objects), "a month before data.start was read"
    # only the selected symbol's files are listed recursively; other symbols are never listed into
    assert not any("symbol=" in r and "symbol=CRY001" not in r for r in listings), listings


def test_an_unknown_bucket_is_one_line_naming_it_and_the_credentials(aws_env, uploaded, tmp_path, cli):
    result = cli("build", "--lake", "s3://no-such-bucket/lake", "--out", str(tmp_path / "ds"), "-q", *BUILD)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "s3://no-such-bucket/lake" in lines[0] and "NoSuchBucket" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0]


def test_a_refused_key_is_named_by_the_service_code_without_the_secret():
    refused = Exception(f"Generic S3 error: list request failed: <Error><Code>InvalidAccessKeyId</Code>"
                        f"<Message>The AWS Access Key Id you provided does not exist</Message></Error> {SECRET}")
    message = str(listing_error("s3://bucket/lake", refused))
    assert "InvalidAccessKeyId" in message and SECRET not in message and "\n" not in message


def test_the_lake_url_carries_no_credentials_anywhere_it_is_used():
    assert lake_label("s3://key:secret@bucket/lakes/hourly?token=abc") == "s3://bucket/lakes/hourly"
    assert lake_root("s3://key:secret@bucket/lakes/hourly/") == "s3://bucket/lakes/hourly"  # file URLs, messages
    assert lake_label("gs://bucket/lake") == "gs://bucket/lake"


def test_an_unsupported_scheme_is_refused_with_the_supported_ones():
    from ohlcv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"s3:// gs:// az://"):
        lake_root("hdfs://namenode/lake")
