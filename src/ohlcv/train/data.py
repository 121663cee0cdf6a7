"""Built datasets as uni2ts sees them: the training span of every series, uni2ts's loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ohlcv.errors import OhlcvError


def read_manifest(dataset: Path) -> dict[str, Any]:
    path = Path(dataset) / "manifest.json"
    if not path.is_file():
        raise OhlcvError(f"{dataset}: no manifest.json; build the dataset with `ohlcv build`")
    return json.loads(path.read_text())


def train_span_indexer(dataset: Path, manifest: dict[str, Any], *, span: str = "train"):
    """uni2ts's ``HuggingFaceDatasetIndexer`` over the dataset, each series cut at the end of ``span``.

    ``span`` is ``train`` (pre-training sees the training span only) or ``validation``.
    """
    import datasets
    import numpy as np
    from uni2ts.data.indexer import HuggingFaceDatasetIndexer

    datasets.disable_progress_bars()
    ends = {
        item["item_id"]: item["train_end"] if span == "train" else item["validation_end"]
        for item in manifest["items"]
    }

    class SpanIndexer(HuggingFaceDatasetIndexer):
        """Series cut at the end of the span (the dataset itself holds whole series)."""

        def _getitem_int(self, idx: int):
            entry = super()._getitem_int(idx)
            end = ends.get(str(entry["item_id"]))
            if end is not None:
                for field in ("target", "past_feat_dynamic_real"):
                    if field in entry:
                        entry[field] = np.asarray(entry[field])[..., :end]
            return entry

    return SpanIndexer(datasets.load_from_disk(str(Path(dataset) / "hf")))
