"""``ohlcv build --executor ray``: a build's batches as Ray tasks, on a cluster or a local Ray runtime.

The build runs as it does on one machine, with two passes handed to Ray:

1. the cross-asset reference pass (when a feature needs it): one task per batch cleans its symbols and
   returns the batch's small contribution to the reference series; the cleaned bars stay in Ray's object
   store (spilled to disk when it fills) for the second pass, as a local build keeps them on disk;
2. one task per batch adds the features, splits, fits the statistics and writes the batch in the dataset's
   final form into its own scratch folder; the task returns those files' bytes and the batch's marker.

The driver (the process that ran ``ohlcv build``) writes each returned batch into the build's work
folder, in the same files and markers as a local build, and merges them as today: the content hash is
the local build's, an interrupted build resumes after its finished batches (with either executor), and
only the driver needs the output folder. Every node needs the lake (an object-store URL, or one shared
folder at the same path) and the same ``ohlcv`` and plugins installed.

``RAY_ADDRESS`` names a running cluster; without it a local Ray runtime is started with ``build.cpus``
CPUs (every core when null) and stopped at the end.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ohlcv.errors import OhlcvError

INSTALL = "pip install 'ohlcv[ray]'"


def import_ray():
    """Ray, or one line with the install command."""
    try:
        import ray
    except ImportError:
        raise OhlcvError(f"build.executor=ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


@contextmanager
def ray_runtime(cpus: int | None) -> Iterator[Any]:
    """Connected to ``RAY_ADDRESS``'s cluster, or to a local runtime started here with ``cpus`` CPUs.

    A runtime the caller already initialised (a notebook, a test) is used as it is and left running.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address is None:  # a runtime of our own: no usage report sent from the user's machine
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None and cpus is not None:
        if cpus <= 0:
            from ohlcv.errors import ConfigError

            raise ConfigError("must be positive (or null for every core)", key="build.cpus")
        options["num_cpus"] = int(cpus)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # noqa: BLE001 - an unreachable cluster, a refused start: one line
        where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray runtime"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise OhlcvError(f"cannot start or reach {where}: {type(exc).__name__}: {first[:300]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _clean(builder, batch):
    """Task: one batch's cleaned bars with their reports, and its contribution to the reference series."""
    import polars as pl

    with pl.Config(engine_affinity="in-memory"):
        cleaned, reports = builder.clean_batch(batch)
        contribution = builder.pipeline.contributions(cleaned) if cleaned is not None else None
    return (cleaned, reports), contribution


def _prepare(builder, index: int, batch, reference, cleaned) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Task: one batch in the dataset's final form, written to a scratch folder of the node it runs on;
    returns its marker and the files' bytes."""
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="ohlcv-ray-") as scratch, pl.Config(engine_affinity="in-memory"):
        builder.scratch = Path(scratch)
        (builder.work / "batches").mkdir(parents=True)
        cleaned, reports = cleaned if cleaned is not None else builder.clean_batch(batch)
        meta = builder.finish_cleaned(index, batch, cleaned, reports, reference)
        folder = builder.work / "batches"
        files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if not path.name.startswith(".")}
    return meta, files


def run_on_ray(builder, batches: list, pending: list[tuple[int, list]],
               all_sources: list) -> Iterator[tuple[int, list, dict]]:
    """The pending batches prepared by Ray tasks, yielded as they finish, as (index, batch, marker), their
    data files already in the build's work folder."""
    if not pending:
        return
    if os.environ.get("RAY_ADDRESS") and builder.cfg.build.cpus is not None:
        builder.notes.append(f"build.cpus={builder.cfg.build.cpus} ignored: the Ray cluster at RAY_ADDRESS "
                             "schedules on its own CPUs")
    with ray_runtime(builder.cfg.build.cpus) as ray:
        # a task holds one CPU: its Polars queries use one thread, as many tasks share a node
        task = dict(num_cpus=1, runtime_env={"env_vars": {"POLARS_MAX_THREADS": "1"}})
        clean = ray.remote(num_returns=2, **task)(_clean)
        prepare = ray.remote(**task)(_prepare)
        state = ray.put(builder)
        cleaned_refs: dict[int, Any] = {}
        reference = None
        if builder.pipeline.needs_reference:
            reference = _reference(ray, clean, state, builder, batches, pending, all_sources, cleaned_refs)
        from ohlcv.builder.pipeline import KeyedReference

        reference_ref = ray.put(KeyedReference.of(reference))  # keyed for the join once, on the driver
        # a window of tasks in flight: finished batches wait in the object store only until written
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue = list(pending)
        running: dict[Any, tuple[int, list]] = {}
        folder = builder.work / "batches"
        while queue or running:
            while queue and len(running) < window:
                index, batch = queue.pop(0)
                ref = prepare.remote(state, index, batch, reference_ref, cleaned_refs.pop(index, None))
                builder.ray_tasks += 1
                running[ref] = (index, batch)
            done, _ = ray.wait(list(running), num_returns=1)
            index, batch = running.pop(done[0])
            meta, files = task_result(ray, done[0], f"batch {index + 1}")
            for name, data in files.items():
                tmp = folder / f".{name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, folder / name)
            yield index, batch, meta


def _reference(ray, clean, state, builder, batches, pending, all_sources, cleaned_refs: dict[int, Any]):
    """The reference series, from clean tasks over every batch of the selection (cached like a local
    build's: in the work folder, or beside the outputs for a shard build)."""
    import polars as pl

    if builder.shard is None:
        target = builder.work / "reference" / "reference.parquet"
        grouped = batches
    else:  # every shard needs the reference of the whole selection, not only of its own symbols
        target = builder.shared_reference_file(all_sources)
        size = int(builder.data.batch_size)
        grouped = [all_sources[i : i + size] for i in range(0, len(all_sources), size)]
    if target.is_file():
        return pl.read_parquet(target)
    wanted = {index for index, _ in pending} if builder.shard is None else set()
    contributions = []
    for index, batch in enumerate(grouped):
        cleaned_ref, contribution_ref = clean.remote(state, batch)
        builder.ray_tasks += 1
        contributions.append(contribution_ref)
        if index in wanted:  # kept for the second pass: the batch is not cleaned twice
            cleaned_refs[index] = cleaned_ref
    parts = [part for part in task_result(ray, contributions, "the reference pass") if part is not None]
    return builder.save_reference(parts, target)


def task_result(ray, refs, what: str):
    """``ray.get``, with a failed or lost task as one line; an ohlcv error raised in the task is passed on as
    it is, and an import or unpickling failure (a node without the same ohlcv or plugins) says so."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, OhlcvError):
            raise OhlcvError(str(cause)) from None
        first = (str(cause).strip().splitlines() or [""])[-1 if isinstance(cause, ray.exceptions.RayError) else 0]
        environment = isinstance(cause, (ImportError, AttributeError)) or "pickl" in str(cause).lower() or \
            "deserializ" in str(cause).lower()
        hint = "; every node needs the same ohlcv and plugins installed" if environment else ""
        raise OhlcvError(f"a Ray task failed in {what}: {type(cause).__name__}: {first[:300]}{hint}") from None
