"""Notebooks are committed clean: outputs, execution counts and run metadata churn every diff and leak data."""

import json

import nbformat
import pytest

from movie_platform.local_stack import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# What nbstripout (the pre-commit hook in .pre-commit-config.yaml) removes, so the hook always satisfies this test.
RUN_NOTEBOOK_METADATA = {"signature", "widgets"}
RUN_CELL_METADATA = {"collapsed", "ExecuteTime", "execution", "heading_collapsed", "hidden", "scrolled"}


def run_leftovers(notebook: dict) -> list[str]:
    """What a kernel run left in the notebook, one line each."""
    found = [f"notebook metadata {key}" for key in sorted(RUN_NOTEBOOK_METADATA & set(notebook.get("metadata", {})))]
    for number, cell in enumerate(notebook["cells"], 1):
        if cell.get("outputs"):
            found.append(f"cell {number}: {len(cell['outputs'])} outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {number}: execution_count {cell['execution_count']}")
        found += [f"cell {number}: metadata {key}" for key in sorted(RUN_CELL_METADATA & set(cell.get("metadata", {})))]
    return found


def test_a_run_notebook_is_caught():
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=3, outputs=[nbformat.v4.new_output("stream", text="2")])
    cell.metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00Z"}
    notebook = nbformat.v4.new_notebook(cells=[cell], metadata={"widgets": {}})
    assert run_leftovers(notebook) == [
        "notebook metadata widgets",
        "cell 1: 1 outputs",
        "cell 1: execution_count 3",
        "cell 1: metadata execution",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path):
    leftovers = run_leftovers(json.loads(path.read_text()))
    assert not leftovers, f"{path.name}: strip it (`nbstripout {path.relative_to(REPO_ROOT)}`): {leftovers}"
