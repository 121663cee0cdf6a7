"""The notebooks of example/ run from top to bottom, as a user would open them first.

Each is a jupytext percent script: converted to a notebook and executed by a real Jupyter kernel
(nbclient), in a folder of its own; any cell that raises fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "example"
INSTALL = "pip install nbclient jupytext ipykernel (in the test extra and requirements/modern.txt)"


def _notebook_tools():
    try:
        import ipykernel  # noqa: F401 - the kernel the notebooks run in
        import jupytext
        import nbclient
    except ImportError as exc:
        pytest.skip(f"executing the examples needs {exc.name}: {INSTALL}")
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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_real_bars_to_a_lake.py", "02_pretrain_finetune_evaluate.py",
                                  "03_a_feature_plugin.py"])
def test_example_notebook_runs_top_to_bottom(name, tmp_path):
    pytest.importorskip("backtesting", reason="the examples' real bars ship with it: pip install backtesting")
    jupytext, nbclient = _notebook_tools()
    notebook = jupytext.read(EXAMPLES / name)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert errors == []
    if name.startswith("02"):  # the plots are inline, the verdict read out of metrics.json
        images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) >= 2
        printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
        assert "CRPS / random_walk" in printed and (tmp_path / "work" / "evaluation" / "metrics.json").is_file()
