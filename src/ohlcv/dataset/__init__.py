"""The built dataset's format: one home for its layout, schema, writers, reader and checks.

A dataset folder holds ``hf/`` (a Hugging Face ``datasets`` dataset in uni2ts's schema: one row
per series with ``item_id``, ``start``, ``freq``, ``target`` of shape (variates, time) and, in
the covariates layout, ``past_feat_dynamic_real``), ``timestamps.parquet`` (every bar's real
time stamp), ``manifest.json``, ``report.json`` and ``profile.yaml``. The builder writes it,
merge combines shards of it, training and evaluation read it; this package imports none of them.
"""
