"""The example notebooks run top to bottom (nbclient, a fresh kernel each, matplotlib without a display)."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("optax")
pytest.importorskip("tqdm")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
NOTEBOOKS = ("quickstart.ipynb", "research.ipynb", "training.ipynb", "loading.ipynb")
CELL_TIMEOUT_S = 300


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    # the inline backend: no GUI, figures become image/png outputs (Agg would draw nothing into the notebook)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("EQX_VAE_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as file:
        notebook = nbformat.read(file, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{name} is committed with outputs; regenerate it with examples/make_notebooks.py"
    )
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    if name != "loading.ipynb":
        assert images > 0, f"{name} drew no figure"
