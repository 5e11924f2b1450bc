"""Smoke run of ``benchmarks/anomaly.py`` at tiny sizes: the report has every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import anomaly


def test_quick_run_reports_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "anomaly.json"
    argv = ["--quick", "--users", "2", "--train-users", "3", "--no-lock", "--profile"]
    assert anomaly.main([*argv, "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    assert printed == report
    assert {"date", "machine", "plan", "data", "training", "anchor", "end_to_end"} <= set(report)
    assert report["machine"]["nproc"] >= 1
    assert report["data"]["users"] == 2 and report["data"]["debits_scored"] > 1_000
    assert report["training"]["n_estimators"] == 200
    e2e, anchor = report["end_to_end"], report["anchor"]
    assert anchor["txns_per_s"] > 0 and e2e["txns_per_s"] > 0
    assert len(anchor["passes_s"]) == len(e2e["passes_s"]) == 3
    assert set(e2e["breakdown"]) == {"features_s", "scoring_s", "reasons_s"}
    assert report["ratio_to_anchor"] == pytest.approx(
        e2e["txns_per_s"] / anchor["txns_per_s"], abs=1e-3
    )
    assert report["target"]["measured"] == report["ratio_to_anchor"]
    assert isinstance(report["target"]["pass"], bool)
    profile = report["features_profile"]
    assert profile["features_py"][0]["function"] == "features.py:build_features"
    assert profile["own_time"] and profile["seconds_profiled"] > 0
