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
# # 2. Pre-train → fine-tune → evaluate against the baselines
#
# A tiny MOIRAI (2 layers, 64 wide, 155 thousand parameters) pre-trained for a
# few steps on real EUR/USD hourly bars, fine-tuned, and then scored on the
# held-out test span against the forecasts a model has to beat: a random walk
# for the price, a zero return for the return. On a 2-core CPU the whole
# notebook takes about a minute.
#
# A model this small, trained this briefly, is not expected to win: the point
# is the workflow, and an evaluation that says so plainly. For a real run use
# the `hourly` profile (a 14-million-parameter model, 10,000 steps) on a GPU.

# %%
import json
import os
import subprocess
import sys
from pathlib import Path

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
# ## The lake
#
# The same public bars as in notebook 1 (ingesting again adds nothing if they are already there).

# %%
import backtesting

bars = Path(backtesting.__file__).parent / "test"
lake = WORK / "lake"
ohlcv("lake", "ingest", bars / "EURUSD.csv", lake, "--asset-class", "fx", "--freq", "1h", "--symbol", "EURUSD")

# %% [markdown]
# ## Pre-train
#
# The `demo` profile is the tiny model with a handful of features. Overrides
# (`KEY=VALUE`) change any setting for one run: here 20 steps, and run folders
# under `work/runs`. The dataset does not exist yet, so it is built first from
# `--lake`; from then on, every command that names it with `--dataset` uses it
# as built.

# %%
dataset = WORK / "datasets" / "eurusd-demo"
settings = [f"output.runs_dir={WORK / 'runs'}"]
ohlcv("pretrain", "--profile", "demo", "--lake", lake, "--dataset", dataset, *settings,
      "pretrain.max_steps=20", "pretrain.checkpoint_every_n_steps=10")

# %% [markdown]
# Each run gets its own folder; `work/runs/demo-pretrain-latest` points at the newest finished one.
#
# ## Fine-tune
#
# Fine-tuning starts from the pre-trained model, stops early when the
# validation loss stops improving, and keeps the starting weights if it did
# not help.

# %%
ohlcv("finetune", "--profile", "demo", "--from", WORK / "runs" / "demo-pretrain-latest" / "model",
      "--dataset", dataset, *settings, "finetune.max_steps=10", "finetune.val_every_n_steps=5")

# %% [markdown]
# ## Evaluate
#
# Rolling-origin forecasts over the test span, for the fine-tuned model and
# (`--zero-shot`) the pre-trained one, and for the baselines on exactly the
# same windows. The table is printed; everything is also in `metrics.json`,
# `metrics.csv`, `report.md` and the plots.

# %%
evaluation = WORK / "evaluation"
ohlcv("evaluate", "--profile", "demo", "--model", WORK / "runs" / "demo-finetune-latest" / "model",
      "--zero-shot", WORK / "runs" / "demo-pretrain-latest" / "model", "--dataset", dataset, "--out", evaluation,
      *settings)

# %% [markdown]
# ## The verdict, from metrics.json
#
# For every target variate: the baseline to beat, the model's CRPS relative to
# it (below 1 is better), and the Diebold–Mariano test of the difference.

# %%
metrics = json.loads((evaluation / "metrics.json").read_text())
for variate, info in metrics["variates"].items():
    yardstick = info["yardstick"]
    ratio = metrics["relative"]["model"][variate]["crps"]
    test = metrics["significance"]["model"][variate][yardstick]["crps"]
    p, n = test["p_value"], test.get("n")  # p is null (None) when there are too few origins for the test
    dm = f"DM p = {p:.3f} over {n} origins" if p is not None else f"no DM test ({n} origins: too few)"
    print(f"{variate} ({info['kind']}, {info['windows']} windows): CRPS / {yardstick} = {ratio:.3f}, {dm}")
    print("   ", metrics["verdicts"]["model"][variate])
for note in metrics["notes"]:
    print("note:", note)

# %% [markdown]
# ## The plots

# %%
try:
    from IPython import get_ipython
    from IPython.display import Image, display

    inline = get_ipython() is not None
except ImportError:
    inline = False  # run as a plain script: the file names only
plots = sorted((evaluation / "plots").glob("*.png"))
for plot in [p for p in plots if p.name.startswith(("forecast_", "relative_per_asset"))]:
    print(plot)
    if inline:
        display(Image(filename=str(plot)))

# %% [markdown]
# `report.md` in the evaluation folder says the same in prose, with every plot linked.
# Next: [03_a_feature_plugin.py](03_a_feature_plugin.py) adds a feature of your own.
