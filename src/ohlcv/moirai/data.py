"""Built datasets as uni2ts sees them: its indexer over each series' span of the split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ohlcv.dataset.read import load_hf, span_bounds, trainable_items


def train_span_indexer(dataset: Path, manifest: dict[str, Any], *, span: str = "train", lead: int = 0,
                       min_length: int = 1, with_ids: bool = False):
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
    indexer = SpanIndexer(hf)
    return (indexer, [str(i) for i in hf["item_id"]]) if with_ids else indexer


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


def window_count(length: int, need: int, distance: int) -> int:
    """How many windows of ``need`` bars, ``distance`` bars apart, fit in ``length`` bars."""
    return (length - need) // distance + 1 if length >= need else 0


def span_windows(dataset: Path, manifest: dict[str, Any], transform, *, span: str, need: int, distance: int,
                 lead: int = 0):
    """Windows of ``need`` bars every ``distance`` bars over the whole ``span`` of each series, through ``transform``.

    Returns (the dataset, {item_id: windows}). Window ``w`` of a series is bars
    [w * distance, w * distance + need) of its span (with ``lead`` bars before a validation span),
    the item's ``window`` field for uni2ts's ``FinetunePatchCrop`` / ``EvalCrop`` and for
    :class:`ohlcv.moirai.moirai2.WindowArrays`. Every series has its own count, so a long
    series contributes windows up to the end of its span (uni2ts's ``FinetuneDataset`` gives
    every series the same count, counted from its start).
    """
    import bisect

    import numpy as np
    from uni2ts.data.dataset import TimeSeriesDataset

    indexer, ids = train_span_indexer(dataset, manifest, span=span, lead=lead, min_length=need, with_ids=True)
    bounds = {item["item_id"]: span_bounds(item, span, lead) for item in manifest["items"]}
    counts = [window_count(bounds[i][1] - bounds[i][0], need, distance) for i in ids]
    ends = np.cumsum(counts).tolist()

    class SpanWindows(TimeSeriesDataset):
        def __len__(self) -> int:
            return int(ends[-1]) if ends else 0

        def _get_data(self, idx: int):
            series = bisect.bisect_right(ends, idx)
            item = self.indexer[series]
            item["window"] = idx - (ends[series - 1] if series else 0)
            return item

    return SpanWindows(indexer, transform), dict(zip(ids, counts))


class WindowDraws:
    """A sampler: ``num_samples`` window indices drawn uniformly, with replacement, from ``range(windows)``.

    Every training window of every series is equally likely, and nothing of size ``windows`` is ever
    built (a permutation of 3e8 windows would take gigabytes per process). The stream is fixed by
    ``seed`` and ``rank``: each process of a DDP run draws its own. Each pass over the sampler (uni2ts's
    loader cycles through it) continues the stream rather than repeating it.
    """

    CHUNK = 4096

    def __init__(self, windows: int, num_samples: int, *, seed: int, rank: int = 0):
        self.windows, self.num_samples, self.seed, self.rank = int(windows), int(num_samples), int(seed), int(rank)
        self.passes = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rank) * 1_009 + self.passes)
        self.passes += 1
        left = self.num_samples
        while left > 0:
            chunk = min(left, self.CHUNK)
            yield from torch.randint(self.windows, (chunk,), generator=generator).tolist()
            left -= chunk


def spread_windows(counts: list[int], cap: int) -> list[int]:
    """At most about ``cap`` window indices (of windows numbered series after series), evenly spread over
    each series' windows, first and last included, each series' share in proportion to its windows and at
    least one: a fixed validation set that covers every series' whole span. All of them when they fit."""
    import numpy as np

    total = sum(counts)
    if total <= cap:
        return list(range(total))
    picked: list[int] = []
    start = 0
    for count in counts:
        share = min(count, max(1, round(cap * count / total)))
        picked.extend(int(start + i) for i in np.unique(np.linspace(0, count - 1, share).round().astype(int)))
        start += count
    return picked


def loader(data, *, pack: tuple[int, Any] | None = None, **kwargs):
    """uni2ts's ``DataLoader`` over ``data``; ``pack=(max_length, model)`` packs samples with ``PackCollate``."""
    from uni2ts.data.loader import DataLoader, PackCollate

    if pack is not None:
        max_length, model = pack
        kwargs["collate_fn"] = PackCollate(max_length=max_length, seq_fields=model.seq_fields,
                                           pad_func_map=model.pad_func_map)
    return DataLoader(data, **kwargs)
