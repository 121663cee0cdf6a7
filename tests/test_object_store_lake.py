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

import polars as pl
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
    folder = tmp_path_factory.mktemp("moto")
    log = folder / "server.log"
    with open(log, "wb") as sink:  # the recording (signed request headers) stays in the test's own folder
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=folder,
                                  env={**os.environ, "MOTO_ENABLE_RECORDING": "True",
                                       "MOTO_RECORDER_FILEPATH": str(folder / "moto_recording")})
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
    # one symbol's last month under another spelling of its frequency (merged into one series), and a
    # daily folder an hourly build must never list
    moved = lake / "asset_class=crypto/freq=60min/symbol=CRY000/year=2023/month=05"
    moved.parent.mkdir(parents=True)
    shutil.move(lake / "asset_class=crypto/freq=1h/symbol=CRY000/year=2023/month=05", moved)
    daily = lake / "asset_class=crypto/freq=1D/symbol=CRY001/year=2023/month=01"
    daily.mkdir(parents=True)
    shutil.copy(lake / "asset_class=crypto/freq=1h/symbol=CRY001/year=2023/month=01/part.parquet", daily)
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
    assert remote.manifest["items"] == local.manifest["items"]  # freq=1h and freq=60min: one series
    assert remote.report["totals"] == local.report["totals"]
    assert remote.report["rows_read"] == local.report["rows_read"] and remote.report["symbols"] == 6
    assert {k: (r["rows_read"], r["files"]) for k, r in remote.report["per_symbol"].items()} == \
        {k: (r["rows_read"], r["files"]) for k, r in local.report["per_symbol"].items()}
    assert remote.manifest["lake"] == url
    assert SECRET not in (tmp_path / "remote" / "manifest.json").read_text()
    assert _build(url, tmp_path / "remote").up_to_date  # the listing's sizes and versions fingerprint the lake


def test_symbol_and_date_selection_read_only_their_partitions(aws_env, uploaded, tmp_path):
    _, url = uploaded
    _record(aws_env, "reset-recording")
    _record(aws_env, "start-recording")
    try:
        built = _build(url, tmp_path / "one", "data.symbols=[CRY001]", "data.asset_classes=[crypto]",
                       "data.start=2023-02-01")
    finally:
        _record(aws_env, "stop-recording")
    assert [item["item_id"] for item in built.manifest["items"]] == ["crypto/CRY001"]
    requests = _recorded_gets(aws_env)
    objects = [r for r in requests if not r.startswith("/lake-bucket?")]
    listings = [r for r in requests if r.startswith("/lake-bucket?")]
    assert objects and all("/freq=1h/symbol=CRY001/" in r for r in objects), objects
    assert not any("/month=01/" in r for r in objects), "a month before data.start was read"
    # only the selected symbol's files are listed recursively; other symbols are never listed into
    assert not any("symbol=" in r and "symbol=CRY001" not in r for r in listings), listings
    # nor other asset classes, nor the other frequency's folders
    assert not any("asset_class=" in r and "asset_class=crypto" not in r for r in listings), listings
    assert not any("freq=1D" in r for r in listings), listings
    assert any("asset_class=crypto/freq=1h/symbol=CRY001" in r for r in listings), listings


def test_a_daily_lake_of_year_files_on_s3_builds_as_locally_and_prunes_by_year(aws_env, tmp_path):
    from obstore.store import S3Store
    import obstore

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["equity", "fx"], freq="1D",
                                bars=600, start="2020-01-02", seed=8, partition="year").root
    # one symbol mixes both kinds in its last year: listed in the same order as on disk (the year's own file,
    # then its month folders), whatever the object keys' byte order
    mixed = lake / "asset_class=equity/freq=1D/symbol=EQU000/year=2022"
    (mixed / "month=03").mkdir()
    pl.read_parquet(mixed / "part.parquet").filter(pl.col("ts").dt.month() == 3).write_parquet(mixed / "month=03/part.parquet")
    store = S3Store("lake-bucket", prefix="lakes/daily", endpoint=aws_env, region="us-east-1", access_key_id="x",
                    secret_access_key="x", client_options={"allow_http": True})
    urllib.request.urlopen(urllib.request.Request(f"{aws_env}/lake-bucket", method="PUT"))
    for path in sorted(lake.rglob("*.parquet")):
        obstore.put(store, path.relative_to(lake).as_posix(), path.read_bytes())
    url = "s3://lake-bucket/lakes/daily"

    def build(where, out, *extra):
        cfg = load_profile("daily", [f"data.lake={where}", f"data.dataset={out}", *BUILD, *extra]).cfg
        return IterativeFinancialDatasetBuilder(cfg).run()

    from ohlcv.lake.layout import discover

    on_disk = [[Path(f).relative_to(lake).as_posix() for f in s.files] for s in discover(lake).sources]
    listed = [[f[len(url) + 1:] for f in s.files] for s in discover(url).sources]
    assert listed == on_disk and on_disk[0][-2:] == ["asset_class=equity/freq=1D/symbol=EQU000/year=2022/part.parquet",
                                                   "asset_class=equity/freq=1D/symbol=EQU000/year=2022/month=03/part.parquet"]
    local, remote = build(lake, tmp_path / "local"), build(url, tmp_path / "remote")
    assert remote.manifest["content_hash"] == local.manifest["content_hash"] and remote.manifest["series"] == 4
    assert remote.manifest["split"] == local.manifest["split"]
    _record(aws_env, "reset-recording")
    _record(aws_env, "start-recording")
    try:
        build(url, tmp_path / "one", "data.symbols=[EQU001]", "data.asset_classes=[equity]", "data.start=2021-06-01")
    finally:
        _record(aws_env, "stop-recording")
    objects = [r for r in _recorded_gets(aws_env) if not r.startswith("/lake-bucket?")]
    assert objects and all("/symbol=EQU001/" in r for r in objects), objects
    assert not any("/year=2020/" in r for r in objects), "a year before data.start was read"


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


@pytest.mark.parametrize("command", ["build", "pretrain"])
def test_a_lake_url_with_credentials_is_refused_and_written_nowhere(cli, tmp_path, command):
    url = f"s3://AKIAEXAMPLE:{SECRET}@bucket/lake?X-Amz-Security-Token=TOKEN{SECRET}"
    where = ["--out", str(tmp_path / "ds"), "-q"] if command == "build" else ["--dataset", str(tmp_path / "ds")]
    result = cli(command, "--lake", url, *where, f"output.runs_dir={tmp_path / 'runs'}")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.lake" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], result.stderr
    assert SECRET not in result.stderr + result.stdout and "AKIAEXAMPLE" not in result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(SECRET in p.read_text(errors="replace") for p in written), written


def test_an_object_store_url_keeps_its_case_and_an_azure_container():
    assert lake_root("s3://MyBucket/Lakes/Hourly/") == "s3://MyBucket/Lakes/Hourly"
    abfs = "abfss://Prices@account.dfs.core.windows.net/lake"
    assert lake_root(abfs) == abfs and lake_label(abfs) == abfs  # container@account is not a user name
    from ohlcv.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        lake_root(f"abfss://user:{SECRET}@account.dfs.core.windows.net/lake")
    assert SECRET not in str(caught.value)


def test_missing_obstore_is_one_line_with_the_install_command(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "obstore", None)  # `import obstore` raises ImportError
    monkeypatch.setitem(sys.modules, "obstore.store", None)
    result = cli("build", "--lake", "s3://bucket/lake", "--out", str(tmp_path / "ds"), "-q", *BUILD)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ohlcv[s3]'" in lines[0], result.stderr


def test_a_failed_fetch_stops_the_build_and_is_not_counted_as_an_unreadable_file(aws_env, uploaded, tmp_path,
                                                                                monkeypatch):
    import polars as pl

    from ohlcv.errors import OhlcvError

    _, url = uploaded
    real = pl.read_parquet

    def throttled(source, *args, **kwargs):
        if str(source).endswith("symbol=CRY001/year=2023/month=03/part.parquet"):
            raise OSError("Generic S3 error: 503 Service Unavailable: SlowDown")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", throttled)
    monkeypatch.setattr(pl, "scan_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("SlowDown")))
    with pytest.raises(OhlcvError, match=r"CRY001.*retry the build") as caught:
        _build(url, tmp_path / "ds", "data.symbols=[CRY001]")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_an_object_store_build_with_an_unreadable_file_is_never_up_to_date(aws_env, uploaded, tmp_path):
    """A corrupt object (fetched, not Parquet) is an unreadable file, as in a local lake, but the build
    that skipped it is redone next time rather than found up to date."""
    from obstore.store import S3Store
    import obstore

    local_lake, _ = uploaded
    store = S3Store("lake-bucket", prefix="lakes/corrupt", endpoint=aws_env, region="us-east-1", access_key_id="x",
                    secret_access_key="x", client_options={"allow_http": True})
    symbol = local_lake / "asset_class=crypto/freq=1h/symbol=CRY001"
    for path in sorted(symbol.rglob("*.parquet")):
        data = b"not parquet" * 100 if "month=03" in path.as_posix() else path.read_bytes()
        obstore.put(store, path.relative_to(local_lake).as_posix(), data)
    url = "s3://lake-bucket/lakes/corrupt"
    first = _build(url, tmp_path / "ds")
    assert first.report["totals"]["files_unreadable"] == 1 and first.report["built"] == 1
    assert not _build(url, tmp_path / "ds").up_to_date


def test_an_unsupported_scheme_is_refused_with_the_supported_ones():
    from ohlcv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"s3:// gs:// az://"):
        lake_root("hdfs://namenode/lake")


def test_s3_discovery_reads_ignores_and_reports_the_same_objects_as_local_discovery(aws_env, tmp_path):
    from obstore.store import S3Store
    import obstore

    from ohlcv.lake.layout import discover
    from tests.test_lake import _litter

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=2, asset_classes=["fx"], bars=1500, seed=3).root
    _litter(lake)
    store = S3Store("lake-bucket", prefix="lakes/litter", endpoint=aws_env, region="us-east-1", access_key_id="x",
                    secret_access_key="x", client_options={"allow_http": True})
    urllib.request.urlopen(urllib.request.Request(f"{aws_env}/lake-bucket", method="PUT"))
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):  # every file, litter included
        obstore.put(store, path.relative_to(lake).as_posix(), path.read_bytes())
    url = "s3://lake-bucket/lakes/litter"
    local, remote = discover(lake, freq="1h"), discover(url, freq="1h")

    def relative(files, root):
        return [str(f)[len(str(root)) + 1:].replace(os.sep, "/") for f in files]

    assert [(s.item_id, relative(s.files, url)) for s in remote.sources] == \
        [(s.item_id, relative(s.files, lake)) for s in local.sources]
    symbol = "asset_class=fx/freq=1h/symbol=FX000"
    assert [m.split(": ")[0][len(url) + 1:] for m in remote.skipped] == \
        [f"{symbol}/bars.parquet", f"{symbol}/year=2023/month=01/extra/part.parquet", symbol]
    assert len(local.skipped) == 3  # the same three, the folder named for the second
    assert remote.skipped[-1].split(": ", 1)[1] == local.skipped[-1].split(": ", 1)[1]  # the same files passed over
    pruned = discover(url, freq="1h", start="2023-02-01")
    assert pruned.skipped[-1].split(": ", 1)[1] == discover(lake, freq="1h", start="2023-02-01").skipped[-1].split(": ", 1)[1]
