"""Applying features to a batch of symbols: plain, cross-asset (reference) and fitted features.

The builder and the look-ahead check both go through :class:`FeaturePipeline`,
so the check tests exactly what a build computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Mapping

import numpy as np

from ohlcv.features import Feature

if TYPE_CHECKING:
    import polars as pl


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _storable(value: "pl.Expr") -> "pl.Expr":
    """Finite, and finite as float32 too (the dataset's type): a volume of 1e39 would be written as inf."""
    return value.is_finite() & (value.abs() <= _FLOAT32_MAX)


@dataclass(frozen=True)
class KeyedReference:
    """A reference series ready to join: an integer key per asset class (``code``) and the series
    with ``_class_key`` and ``ref_``-prefixed columns. A build keys its reference once, not per batch."""

    code: dict[str, int]
    frame: "pl.DataFrame"

    @classmethod
    def of(cls, reference: "pl.DataFrame | KeyedReference | None") -> "KeyedReference | None":
        import polars as pl

        if reference is None or isinstance(reference, KeyedReference):
            return reference
        code = {c: i for i, c in enumerate(reference["asset_class"].unique().sort().to_list())}
        keyed = reference.select(pl.col("asset_class").replace_strict(code, return_dtype=pl.Int64).alias("_class_key"),
                                 "ts", pl.exclude("asset_class", "ts").name.prefix("ref_"))
        return cls(code, keyed)


@dataclass
class FeaturePipeline:
    specs: list[tuple[Feature, dict[str, Any]]]  # (feature, resolved params), in profile order

    @property
    def needs_reference(self) -> bool:
        return any(f.reference is not None for f, _ in self.specs)

    @property
    def needs_split(self) -> bool:
        return any(f.fit is not None for f, _ in self.specs)

    def contribution_exprs(self) -> "list[pl.Expr]":
        exprs, seen = [], set()
        for feature, params in self.specs:
            if feature.reference is None:
                continue
            for expr in feature.reference(params):
                name = expr.meta.output_name()
                if name not in seen:
                    seen.add(name)
                    exprs.append(expr)
        return exprs

    def contributions(self, frame: "pl.DataFrame") -> "pl.DataFrame | None":
        """Per (asset class, bar): count, sum and sum of squares of every reference contribution.

        Summed with numpy over rows sorted by (asset class, bar, item), so that the
        result does not depend on how many rows there are or on thread scheduling:
        a bar's reference depends on that bar's values only, to the last bit.
        """
        import numpy as np
        import polars as pl

        exprs = self.contribution_exprs()
        if not exprs or frame.height == 0:
            return None
        names = [e.meta.output_name() for e in exprs]
        # integer keys instead of strings (sorting 1M id strings cost more than the features): each item's
        # rank among the batch's ids, each class's rank among its classes, the bar's time as an integer;
        # ranks keep the strings' order, so the rows are summed in the same order as by the strings
        runs = frame["item_id"].rle()
        run_ids, lengths = runs.struct.field("value"), runs.struct.field("len").to_numpy()
        items, item_of_run = np.unique(run_ids.to_numpy(), return_inverse=True)
        classes, class_of_run = np.unique(run_ids.str.split("/").list.first().to_numpy(), return_inverse=True)
        item = np.repeat(item_of_run, lengths)
        asset_class = np.repeat(class_of_run, lengths)
        stamps = frame["ts"].to_physical().to_numpy()
        values = frame.lazy().with_columns(pl.Series("_item", item)).select(*[e.over("_item") for e in exprs]).collect()
        order = np.lexsort((item, stamps, asset_class))
        sorted_class, sorted_ts = asset_class[order], stamps[order]
        new_group = np.ones(len(order), dtype=bool)
        new_group[1:] = (sorted_class[1:] != sorted_class[:-1]) | (sorted_ts[1:] != sorted_ts[:-1])
        starts = np.flatnonzero(new_group)
        out = {"asset_class": pl.Series("asset_class", classes[sorted_class[starts]], dtype=pl.String),
               "ts": frame["ts"].gather(order[starts])}
        for name in names:
            column = values[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()[order]
            known = np.isfinite(column)
            clean = np.where(known, column, 0.0)
            out[f"{name}__n"] = np.add.reduceat(known.astype(np.float64), starts)
            out[f"{name}__sum"] = np.add.reduceat(clean, starts)
            out[f"{name}__sumsq"] = np.add.reduceat(clean * clean, starts)
        return pl.DataFrame(out)

    @staticmethod
    def add(total: "pl.DataFrame | None", part: "pl.DataFrame | None") -> "pl.DataFrame | None":
        """``total`` plus one more batch's contributions: the same sums, bit for bit, as
        ``combine([total, part])`` (a bar in both is ``total + part``), by a join on the bars instead of
        sorting both frames again: folding a build's batches one by one costs ~25x less."""
        import polars as pl

        total = total if total is not None and total.height else None
        part = part if part is not None and part.height else None
        if total is None or part is None:
            return total if part is None else part
        keys = ["asset_class", "ts"]
        joined = total.join(part, on=keys, how="full", coalesce=True, suffix="__part")
        summed = []
        for c in (c for c in total.columns if c not in keys):
            mine, theirs = pl.col(c), pl.col(f"{c}__part")
            summed.append(pl.when(theirs.is_null()).then(mine).when(mine.is_null()).then(theirs)
                          .otherwise(mine + theirs).alias(c))
        return joined.select(*keys, *summed).sort(keys)

    @staticmethod
    def combine(parts: "list[pl.DataFrame]") -> "pl.DataFrame | None":
        """Add up per-batch contributions into the reference series."""
        import polars as pl

        parts = [p for p in parts if p is not None and p.height]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        stacked = pl.concat(parts, how="vertical")
        value_columns = [c for c in stacked.columns if c not in ("asset_class", "ts")]
        # batches in build order, summed in that order within each bar: deterministic
        return (
            stacked.with_row_index("_order")
            .sort("asset_class", "ts", "_order")
            .group_by("asset_class", "ts", maintain_order=True)
            .agg([pl.col(c).cum_sum().last() for c in value_columns])
        )

    def apply(
        self,
        frame: "pl.DataFrame",
        *,
        reference: "pl.DataFrame | KeyedReference | None" = None,
        train_end: Mapping[str, int] | None = None,
        finite: "Collection[str] | None" = None,
        warmup_mask: bool = True,
    ) -> "pl.DataFrame":
        """``frame`` (item_id, ts, OHLCV; sorted by item and time) plus every feature's outputs (Float64).

        ``finite``: when given, the features' NaN and infinite values (a division by a zero range, say)
        and values beyond float32's range become missing, and so do those of the columns of ``frame``
        it names. ``warmup_mask=False`` leaves each output's warm-up as the feature computed it (for the
        warm-up check; a build always masks)."""
        import polars as pl

        base_columns = list(frame.columns)
        work = frame
        runs = frame["item_id"].rle()  # each item's run of rows
        if self.needs_reference and reference is not None:
            # joined on an integer class key: the class of each run of an item's rows, not of every row
            # (splitting a million id strings cost more than the join itself)
            keyed = KeyedReference.of(reference)
            classes = runs.struct.field("value").str.split("/").list.first().to_list()
            key = np.repeat(np.array([keyed.code.get(c, -1) for c in classes], dtype=np.int64),
                            runs.struct.field("len").to_numpy())
            work = (work.with_columns(pl.Series("_class_key", key))
                    .join(keyed.frame, on=["_class_key", "ts"], how="left", maintain_order="left").drop("_class_key"))
        if self.needs_reference:
            for expr in self.contribution_exprs():
                name = expr.meta.output_name()
                for suffix in ("n", "sum", "sumsq"):
                    column = f"ref_{name}__{suffix}"
                    if column not in work.columns:
                        work = work.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
        # number each item's run of rows and evaluate per run: an integer key is cheaper to group on
        # than the item id strings (an item whose rows are not together is numbered by its id instead)
        values, lengths = runs.struct.field("value"), runs.struct.field("len").to_numpy()
        single = values.len() <= 1  # one series: no need to evaluate per item
        contiguous = values.n_unique() == values.len()
        numbered = not single and contiguous
        if numbered:  # number the runs, and each bar's position in its run (for the warm-up mask), with numpy
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            series = np.repeat(np.arange(len(lengths), dtype=np.uint32), lengths)
            positions = np.arange(work.height, dtype=np.int64) - np.repeat(starts, lengths)
            # flagged sorted (it is: runs are numbered in order), Polars evaluates `over` on slices (measured:
            # a shift per series 3x, a rolling window 1.2x faster than grouping an unsorted key)
            work = work.with_columns(pl.Series("_series", series).set_sorted(), pl.Series("_pos", positions))
        elif not single:
            work = work.with_columns(work["item_id"].cast(pl.Categorical).to_physical().alias("_series"))

        def per_item(expr, feature):
            # a bounded feature is evaluated over the whole column: the warm-up mask below drops every
            # value whose window reaches into the previous series (not for a fitted one: the mask does
            # not cover what its fit reads)
            whole = feature.bounded and contiguous and feature.fit is None
            return expr if single or whole else expr.over("_series")

        stages: list[list] = []
        exprs, per_series, temporary = [], [], []
        for feature, params in self.specs:
            is_expr = feature.exprs is not None and feature.fit is None
            for depth, stage in enumerate(feature.intermediate_stages(params)):
                while len(stages) <= depth:
                    stages.append([])
                stages[depth].extend(per_item(e, feature) for e in stage)
                if is_expr:  # (a per-series feature reads its own in the loop below; the final select drops them)
                    temporary.extend(e.meta.output_name() for e in stage)
            if is_expr:
                exprs.extend(per_item(e, feature) for e in feature.exprs(params))
            else:
                per_series.append((feature, params))
        query = work.lazy()
        for stage in stages:
            query = query.with_columns(stage)
        if exprs:
            query = query.with_columns(exprs)
        if per_series:
            work = query.collect(engine="in-memory").drop(temporary)
            parts = []
            if numbered:  # each item's rows are together: zero-copy slices instead of a group-by's gathers
                items = [(item_id, work.slice(int(start), int(length)))
                         for item_id, start, length in zip(values.to_list(), starts, lengths)]
            else:
                items = [(key[0] if isinstance(key, tuple) else key, part)
                         for key, part in work.group_by("item_id", maintain_order=True)]
            for item_id, part in items:
                inputs = part.drop("item_id", "_series", "_pos", strict=False)
                outputs = []
                for feature, params in per_series:
                    call = dict(params)
                    if feature.fit is not None:
                        end = (train_end or {}).get(item_id, part.height)
                        call["fitted"] = feature.fit(inputs.head(end), params)
                    outputs.append(feature.compute(inputs, call))
                # numbered: only the outputs are stacked, then set beside the batch's columns (which are
                # not copied); grouped: each group's rows with its outputs, in the groups' order
                parts.append(pl.concat(outputs if numbered else [part, *outputs], how="horizontal"))
            if numbered:
                work = work.hstack(pl.concat(parts, how="vertical"))
            elif parts:
                work = pl.concat(parts, how="vertical")
            query = work.lazy()
        # the warm-up contract: a feature's outputs are missing (never zeros) before its warm-up
        if not numbered:
            query = query.with_columns((pl.int_range(pl.len()) if single else pl.int_range(pl.len()).over("_series")).alias("_pos"))
        # one boolean column per distinct warm-up, read by every output that has it
        output_warmups = [feature.output_warmups(params) for feature, params in self.specs]
        if not warmup_mask:
            output_warmups = [dict.fromkeys(each, 0) for each in output_warmups]
        warmups = {w for each in output_warmups for w in each.values()} - {0}
        query = query.with_columns((pl.col("_pos") >= w).alias(f"_ready_{w}") for w in sorted(warmups))
        masked = []
        for each in output_warmups:
            for column, warmup in each.items():
                value = pl.col(column).cast(pl.Float64)
                if finite is not None:
                    keep = _storable(value) & pl.col(f"_ready_{warmup}") if warmup else _storable(value)
                    masked.append(pl.when(keep).then(value).alias(column))
                else:
                    masked.append(pl.when(pl.col(f"_ready_{warmup}")).then(value).alias(column) if warmup else value)
        if finite is not None:
            base = [c if c not in finite else pl.when(_storable(pl.col(c))).then(pl.col(c)).alias(c) for c in base_columns]
        else:
            base = base_columns
        # a batch is in memory already: the in-memory engine runs these queries faster than the streaming one
        return query.select(*base, *masked).collect(engine="in-memory")
