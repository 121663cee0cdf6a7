"""The hive-partitioned Parquet lake: discovery, a sample generator, and ingest."""
