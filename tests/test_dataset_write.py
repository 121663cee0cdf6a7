"""The merge places finished Arrow files into a ``datasets`` dataset without rewriting them: what
``load_from_disk`` reads is what ``save_to_disk`` of their concatenation would have written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ohlcv.dataset.format import Variates
from ohlcv.dataset import write
from ohlcv.dataset.write import place_dataset, write_rows

VARIATES = Variates(names=["a", "b", "c"], targets=["a", "b"], covariates=["c"])


def _batch_files(folder: Path, sizes: list[int]) -> list[Path]:
    """Arrow files as the builder writes its batches: ``sizes[i]`` rows in file i (0: an empty file)."""
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True, exist_ok=True)
    files, count = [], 0
    for index, size in enumerate(sizes):
        rows = []
        for _ in range(size):
            length = int(rng.integers(20, 60))
            values = rng.normal(size=(3, length)).astype(np.float32)
            values[0, 3] = np.nan  # a missing bar stays missing
            rows.append({"item_id": f"crypto/X{count:03d}", "start": np.datetime64("2024-01-01T00:00:00", "s") + count,
                         "freq": "1h", "target": values[:2], "past_feat_dynamic_real": values[2:]})
            count += 1
        files.append(folder / f"batch-{index:05d}.arrow")
        write_rows(files[-1], [rows], VARIATES)
    return files


def _rows(dataset) -> list[tuple]:
    return [(str(r["item_id"]), r["start"], str(r["freq"]), np.stack(r["target"]).tobytes(),
             np.stack(r["past_feat_dynamic_real"]).tobytes()) for r in dataset.with_format("numpy")]


@pytest.mark.parametrize("sizes", [[3, 1, 4], [2, 0, 5], [6]])
def test_placed_files_load_as_the_dataset_datasets_would_have_saved(tmp_path, monkeypatch, sizes):
    import datasets

    monkeypatch.setattr(write, "_OWN_FILE", 1)  # every file large enough to be placed as it is
    files = _batch_files(tmp_path / "batches", sizes)
    reference = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])
    reference.save_to_disk(str(tmp_path / "reference"))
    place_dataset(files, tmp_path / "placed", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "scratch", keep=True)

    saved, placed = datasets.load_from_disk(str(tmp_path / "reference")), datasets.load_from_disk(str(tmp_path / "placed"))
    assert len(placed) == len(saved) == sum(sizes)
    assert placed.features == saved.features
    assert placed.data.schema.equals(saved.data.schema, check_metadata=True)
    assert _rows(placed) == _rows(saved)  # same rows, same order, same values (NaN bytes included)
    assert (tmp_path / "placed" / "dataset_info.json").read_text() == (tmp_path / "reference" / "dataset_info.json").read_text()
    # datasets' own file names, in batch order; the batch files themselves are kept (hard links)
    assert sorted(p.name for p in (tmp_path / "placed").glob("*.arrow")) == [
        f"data-{i:05d}-of-{len(sizes):05d}.arrow" for i in range(len(sizes))]
    assert all(f.is_file() for f in files) and not (tmp_path / "scratch").exists()


def test_runs_of_small_files_are_joined_and_large_files_placed_as_they_are(tmp_path, monkeypatch):
    import datasets

    files = _batch_files(tmp_path / "batches", [3, 1, 6, 2])
    size = [f.stat().st_size for f in files]
    monkeypatch.setattr(write, "_OWN_FILE", size[2])  # the 6-row file is large
    monkeypatch.setattr(write, "_SHARD_BYTES", size[0] + size[1])  # the first two fill a joined file
    place_dataset(files, tmp_path / "placed", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "scratch", keep=True)
    placed = tmp_path / "placed"
    names = sorted(p.name for p in placed.glob("*.arrow"))
    assert names == [f"data-{i:05d}-of-00003.arrow" for i in range(3)]
    assert [len(datasets.Dataset.from_file(str(placed / n))) for n in names] == [4, 6, 2]
    assert (placed / names[1]).samefile(files[2]) and (placed / names[2]).samefile(files[3])
    assert all(f.is_file() for f in files)
    reference = datasets.concatenate_datasets([datasets.Dataset.from_file(str(f)) for f in files])
    assert _rows(datasets.load_from_disk(str(placed))) == _rows(reference)


def test_a_dataset_without_rows_loads_empty_with_its_features(tmp_path):
    import datasets

    place_dataset([], tmp_path / "empty", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "scratch", keep=True)
    empty = datasets.load_from_disk(str(tmp_path / "empty"))
    assert len(empty) == 0 and list(empty.with_format("numpy")) == []
    files = _batch_files(tmp_path / "batches", [1])
    assert empty.features == datasets.Dataset.from_file(str(files[0])).features


def test_renamed_files_leave_their_folder(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(write, "_OWN_FILE", 1)

    files = _batch_files(tmp_path / "batches", [2, 2])
    place_dataset(files, tmp_path / "placed", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "scratch", keep=False)
    assert not any(f.exists() for f in files)
    assert len(datasets.load_from_disk(str(tmp_path / "placed"))) == 4


def test_a_datasets_version_with_another_state_layout_is_refused_in_one_line(tmp_path, monkeypatch):
    import datasets

    from ohlcv.errors import OhlcvError

    # stands in for a future datasets whose saved state no longer lists its data files
    monkeypatch.setattr(datasets.config, "DATASET_STATE_JSON_FILENAME", "dataset_info.json")
    files = _batch_files(tmp_path / "batches", [1])
    with pytest.raises(OhlcvError, match="no list of data files"):
        place_dataset(files, tmp_path / "placed", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "s", keep=True)


def test_a_file_system_without_hard_links_gets_copies_and_keeps_the_batch_files(tmp_path, monkeypatch):
    import errno

    import datasets

    def refuse(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(write, "_OWN_FILE", 1)
    monkeypatch.setattr(write.os, "link", refuse)
    files = _batch_files(tmp_path / "batches", [2, 1])
    place_dataset(files, tmp_path / "placed", VARIATES, fingerprint="0" * 16, scratch=tmp_path / "scratch", keep=True)
    assert all(f.is_file() for f in files)  # the originals stay for a resumed merge
    placed = sorted((tmp_path / "placed").glob("data-*.arrow"))
    assert [p.stat().st_nlink for p in placed] == [1, 1]  # copies, not links
    assert len(datasets.load_from_disk(str(tmp_path / "placed"))) == 3


def test_rows_given_as_column_major_or_strided_views_are_written_and_hashed_as_contiguous_copies(tmp_path):
    rng = np.random.default_rng(9)
    columns = np.asfortranarray(rng.normal(size=(50, 3)).astype(np.float32))  # (time, variates), as a batch's values
    views = [columns[5:40].T, columns[::-1][3:30].T, columns[10:45, [2, 0, 1]].T]  # F-order, reversed, fancy-indexed
    row = lambda i, v: {"item_id": f"x/{i}", "start": np.datetime64("2024-01-01T00:00:00", "s"), "freq": "1h",
                        "target": v[:2], "past_feat_dynamic_real": v[2:]}
    digests_view = write_rows(tmp_path / "view.arrow", [[row(i, v) for i, v in enumerate(views)]], VARIATES)
    copies = [np.ascontiguousarray(v) for v in views]
    digests_copy = write_rows(tmp_path / "copy.arrow", [[row(i, v) for i, v in enumerate(copies)]], VARIATES)
    assert digests_view == digests_copy
    assert (tmp_path / "view.arrow").read_bytes() == (tmp_path / "copy.arrow").read_bytes()
