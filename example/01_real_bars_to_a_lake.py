# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Real bars → a lake → a dataset → a token budget
#
# This notebook takes two files of real, public market data, puts them in a
# Parquet lake, builds a training dataset from it and checks it, then asks how
# many tokens one training sample costs. Every step is an `ohlcv` command, run
# here as you would run it in a terminal.
#
# The bars are the sample data shipped inside the
# [`backtesting`](https://pypi.org/project/backtesting/) package (installed with
# the test extra, or by `pip install backtesting`): Google's daily bars
# 2004–2013 and EUR/USD hourly bars 2017–2018.
#
# Everything is written under `work/` next to where you run it.

# %%
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

WORK = Path("work")
WORK.mkdir(exist_ok=True)


def ohlcv(*args, show=True):
    """Run `ohlcv ARGS` and show what it prints (a failed command stops the notebook)."""
    done = subprocess.run([sys.executable, "-m", "ohlcv", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    if show:
        print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    if done.returncode:
        raise RuntimeError(f"`ohlcv {' '.join(map(str, args))}` exited with {done.returncode}")
    return done


# %% [markdown]
# ## The raw files
#
# Exports like these are what data vendors hand out: one file per symbol, the
# time stamp in the first (unnamed) column, then open, high, low, close, volume.

# %%
import backtesting

bars = Path(backtesting.__file__).parent / "test"
eurusd = pd.read_csv(bars / "EURUSD.csv", index_col=0, parse_dates=True)
goog = pd.read_csv(bars / "GOOG.csv", index_col=0, parse_dates=True)
print(f"EURUSD: {len(eurusd):,} hourly bars, {eurusd.index[0]} to {eurusd.index[-1]}")
print(f"GOOG:   {len(goog):,} daily bars, {goog.index[0].date()} to {goog.index[-1].date()}")
eurusd.head()

# %% [markdown]
# ## Into the lake
#
# `ohlcv lake ingest` converts them into the lake's layout,
# `asset_class=…/freq=…/symbol=…/year=…/month=…/part.parquet`. The asset class
# decides the trading calendar later on (FX trades around the clock on weekdays,
# US equities in NYSE sessions). Ingesting again only adds bars it has not seen.

# %%
lake = WORK / "lake"
ohlcv("lake", "ingest", bars / "EURUSD.csv", lake, "--asset-class", "fx", "--freq", "1h", "--symbol", "EURUSD")
ohlcv("lake", "ingest", bars / "GOOG.csv", lake, "--asset-class", "equity", "--freq", "1D", "--symbol", "GOOG")
print(sorted(str(p.relative_to(lake)) for p in lake.glob("*/*/*")))

# %% [markdown]
# ## Build the dataset and check it
#
# `ohlcv build` cleans the bars on the venue's calendar (the weekend is closed
# market, not a gap), adds the profile's features, splits the span by date into
# train / validation / test, fits the normalization on the training span only,
# and writes a Hugging Face dataset in the schema MOIRAI trains on. `--check`
# then reads it back through uni2ts's own loader.
#
# The `hourly` profile picks the lake's `freq=1h` bars (EUR/USD here);
# `--quiet` keeps the report to its last line, `--json` would print it all as JSON.

# %%
ohlcv("build", "--profile", "hourly", "--lake", lake, "--out", WORK / "datasets" / "eurusd", "--check", "--quiet")

# %% [markdown]
# The daily profile builds Google's bars the same way, on the NYSE calendar
# (holidays and half days included):

# %%
ohlcv("build", "--profile", "daily", "--lake", lake, "--out", WORK / "datasets" / "goog", "--check", "--quiet")

# %% [markdown]
# ## The token budget
#
# A MOIRAI sample is `variates × ⌈(context + horizon) / patch size⌉` tokens,
# and the model reads at most 512. `ohlcv budget` counts the variates the
# dataset really has and says which patch sizes fit:

# %%
ohlcv("budget", "--profile", "hourly", "--dataset", WORK / "datasets" / "eurusd")

# %% [markdown]
# A longer context costs tokens; the same question for two weeks of hourly context, as JSON:

# %%
import json

plan = json.loads(ohlcv("budget", "--profile", "hourly", "--dataset", WORK / "datasets" / "eurusd", "--json",
                        "data.context_length=336", show=False).stdout)
print({row["patch_size"]: row["tokens"] for row in plan["rows"]})

# %% [markdown]
# Next: [02_pretrain_finetune_evaluate.py](02_pretrain_finetune_evaluate.py) trains a
# small model on these bars and scores it against the baselines.
