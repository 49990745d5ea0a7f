"""Every notebook runs headless against the stack the demo filled; a cell error or any warning fails the test."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from movie_platform.local_stack import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_the_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_eda.ipynb", "02_features.ipynb", "03_experiments.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_errors(path: Path, demo_run, tmp_path):
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit notebooks with clean outputs"
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    noise = [o.text for o in outputs if o.output_type == "stream" and (o.name == "stderr" or "Warning" in o.text)]
    assert not noise, f"{path.name} printed warnings or stderr: {noise}"
    assert any(o.output_type in ("execute_result", "display_data", "stream") for o in outputs)
