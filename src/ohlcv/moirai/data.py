"""Built datasets as uni2ts sees them: its indexer over each series' span of the split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ohlcv.dataset.read import load_hf, span_bounds, trainable_items


def train_span_indexer(dataset: Path, manifest: dict[str, Any], *, span: str = "train", lead: int = 0,
                       min_length: int = 1):
    """uni2ts's ``HuggingFaceDatasetIndexer`` over the dataset, each series cut to ``span``.

    ``train``: bars [0, train_end). ``validation``: bars [train_end - lead, validation_end), i.e.
    the validation span preceded by ``lead`` bars of context. Series whose span is shorter than
    ``min_length`` bars are left out (see :func:`trainable_items`).
    """
    import datasets
    import numpy as np
    from uni2ts.data.indexer import HuggingFaceDatasetIndexer

    datasets.disable_progress_bars()
    bounds = {item["item_id"]: span_bounds(item, span, lead) for item in manifest["items"]}
    keep = {item["item_id"] for item in trainable_items(manifest, span, min_length, lead)}

    class SpanIndexer(HuggingFaceDatasetIndexer):
        """Series cut at the end of the span (the dataset itself holds whole series)."""

        def _getitem_int(self, idx: int):
            entry = super()._getitem_int(idx)
            bound = bounds.get(str(entry["item_id"]))
            if bound is not None:
                for field in ("target", "past_feat_dynamic_real"):
                    if field in entry:
                        entry[field] = np.asarray(entry[field])[..., bound[0] : bound[1]]
            return entry

    hf = load_hf(dataset, manifest)
    if len(keep) < len(bounds):
        hf = hf.select([i for i, item_id in enumerate(hf["item_id"]) if str(item_id) in keep])
    return SpanIndexer(hf)


def pretrain_series(dataset: Path, manifest: dict[str, Any], cfg, model, *, min_length: int = 1):
    """uni2ts's ``TimeSeriesDataset`` over every series' training span, through ``model``'s pre-training
    transform with the profile's patch-size constraint (see :mod:`ohlcv.moirai.compat`)."""
    from uni2ts.data.dataset import TimeSeriesDataset

    from ohlcv.moirai.compat import fixed_transform_map, patch_range

    low, high = patch_range(cfg)
    transforms = fixed_transform_map(model.train_transform_map, low, high)
    return TimeSeriesDataset(train_span_indexer(dataset, manifest, min_length=min_length),
                             transform=transforms["ohlcv"]())


def pretraining_view(hf, cfg):
    """(uni2ts's indexer over a whole dataset, the series through the profile's pre-training transform):
    how ``ohlcv check`` sees a dataset the way pre-training will."""
    from uni2ts.data.dataset import TimeSeriesDataset
    from uni2ts.data.indexer import HuggingFaceDatasetIndexer

    from ohlcv.moirai.compat import pretrain_transform

    indexer = HuggingFaceDatasetIndexer(hf)
    transform_map, _ = pretrain_transform(cfg, tiny=True)
    return indexer, TimeSeriesDataset(indexer, transform=transform_map["ohlcv"]())


def finetune_windows(windows: int, indexer, transform, *, evaluation: bool = False):
    """uni2ts's ``FinetuneDataset`` (training) or ``EvalDataset`` (validation) of ``windows`` per series."""
    from uni2ts.data.dataset import EvalDataset, FinetuneDataset

    return (EvalDataset if evaluation else FinetuneDataset)(windows, indexer, transform)


def loader(data, *, pack: tuple[int, Any] | None = None, **kwargs):
    """uni2ts's ``DataLoader`` over ``data``; ``pack=(max_length, model)`` packs samples with ``PackCollate``."""
    from uni2ts.data.loader import DataLoader, PackCollate

    if pack is not None:
        max_length, model = pack
        kwargs["collate_fn"] = PackCollate(max_length=max_length, seq_fields=model.seq_fields,
                                           pad_func_map=model.pad_func_map)
    return DataLoader(data, **kwargs)
