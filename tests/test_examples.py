"""The notebooks of example/ run from top to bottom, as a user would open them first.

Each is a jupytext percent script: converted to a notebook and executed by a real Jupyter kernel
(nbclient), in a folder of its own; any cell that raises fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "example"
INSTALL = "pip install nbclient jupytext ipykernel (in the test extra and requirements/modern.txt)"


def _missing(what: str, install: str) -> None:
    """Skip, naming the install command; in CI (OHLCV_REQUIRE_EXAMPLES=1, set by .ci/run) fail instead."""
    message = f"executing the examples needs {what}: {install}"
    if os.environ.get("OHLCV_REQUIRE_EXAMPLES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _notebook_tools():
    try:
        import ipykernel  # noqa: F401 - the kernel the notebooks run in
        import jupytext
        import nbclient
    except ImportError as exc:
        _missing(exc.name, INSTALL)
    return jupytext, nbclient


def test_every_example_is_listed_in_the_readme():
    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 3 and all(name in readme for name in scripts)


def test_the_examples_are_percent_scripts_never_notebooks_with_outputs():
    assert list(EXAMPLES.glob("*.ipynb")) == []
    for script in EXAMPLES.glob("[0-9][0-9]_*.py"):
        text = script.read_text()
        assert text.startswith("# ---\n# jupyter:") and "formats: py:percent" in text and "# %%" in text, script.name


# what each notebook must print: the step a user opens it for
READS_OUT = {
    "01_real_bars_to_a_lake.py": ["EURUSD:", "GOOG:", "freq=1h", "verdict:"],
    "02_pretrain_finetune_evaluate.py": ["CRPS / random_walk", " origins"],
    "03_a_feature_plugin.py": ["look-ahead: pass", "look-ahead: FAIL - first offending bar", "'feature': 'close_z'"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(READS_OUT))
def test_example_notebook_runs_top_to_bottom(name, tmp_path):
    """nbclient raises on the first cell that fails; then what the notebook prints is checked."""
    if not name.startswith("03") and importlib.util.find_spec("backtesting") is None:
        _missing("backtesting (its bundled public bars are the examples' real data)", "pip install backtesting")
    jupytext, nbclient = _notebook_tools()
    notebook = jupytext.read(EXAMPLES / name)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    missing = [text for text in READS_OUT[name] if text not in printed]
    assert missing == [], printed[-3000:]
    if name.startswith("02"):  # the plots are inline, the verdict read out of metrics.json
        images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= 2 and (tmp_path / "work" / "evaluation" / "metrics.json").is_file()
        assert re.search(r"(DM p = [0-9.]+ over \d+ origins|no DM test \(\d+ origins: too few\))", printed), printed
