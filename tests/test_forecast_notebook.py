"""The forecast notebook runs top to bottom on real Berka accounts (SMALL) and shows the fan
chart, the attention, the importances and the explanation.

Executed like ``tests/test_categorizer_notebook.py``; it needs the shared Berka data, so it
skips when that is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scale_ray.settings import get_settings

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "forecast_explained.ipynb"
BERKA = get_settings().shared_data_path() / "berka_ecac"


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
    assert any("SMALL = True" in c.source for c in code)


def test_forecast_notebook_runs(tmp_path: Path) -> None:
    # Prepare
    if not BERKA.is_dir():
        pytest.skip(f"shared data not found at {BERKA}")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures

    # Execute
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=env)

    # Assert: no errors; fan chart, attention and importances drawn; an explanation printed.
    assert not _outputs(nb, "error")
    displays = _outputs(nb, "display_data") + _outputs(nb, "execute_result")
    images = [o for o in displays if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    text = "".join(o.get("text", "") for o in _outputs(nb, "stream"))
    assert "Over the next 30 days" in text
    assert "The forecast leans most on" in text
