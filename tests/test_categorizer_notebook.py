"""The categorizer evaluation notebook runs top to bottom on the real Birmingham files (SMALL).

Executed the way ``tests/test_notebooks.py`` executes the ledger notebooks; it needs the shared
Birmingham data (not the ledger), so it skips when that data is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scale_ray.settings import get_settings

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "categorizer_evaluation.ipynb"
BIRMINGHAM = get_settings().shared_data_path() / "birmingham_pcard_2016_2017"


def _outputs(nb: nbformat.NotebookNode, output_type: str) -> list[nbformat.NotebookNode]:
    return [
        o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == output_type
    ]


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]

    assert code
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        "strip outputs"
    )
    # The default must be the quick run: CI and this test rely on it.
    assert any("SMALL = True" in c.source for c in code)


def test_categorizer_notebook_runs(tmp_path: Path) -> None:
    # Prepare
    if not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures

    # Execute
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=env)

    # Assert: no errors; the two figures (ball, confusion matrix) and the tables were drawn.
    assert not _outputs(nb, "error")
    displays = _outputs(nb, "display_data") + _outputs(nb, "execute_result")
    images = [o for o in displays if "image/png" in o.get("data", {})]
    tables = [o for o in displays if "text/html" in o.get("data", {})]
    assert len(images) >= 2
    assert len(tables) >= 4  # data summary, radii, discovered clusters, hierarchy report
    printed = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert "held out:" in printed
    assert "unknown threshold" in printed
    report = next(c for c in nb.cells if c.cell_type == "code" and "hierarchy_report()" in c.source)
    text = report.outputs[-1]["data"]["text/plain"]
    assert "group_prototype_radius" in text and "nan" not in text.lower()
