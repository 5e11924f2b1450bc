"""Smoke run of ``benchmarks/categorize.py`` at tiny sizes: the report has every figure.

Without the shared data the benchmark falls back to the built-in merchants and default rows,
so this runs on a fresh clone too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import categorize
from scale_ray.models.hypcd.categorizer import fit_categorizer
from scale_ray.models.hypcd.train import TrainConfig


def test_zipf_stream_favours_the_first_merchants() -> None:
    merchants = [f"m{i}" for i in range(100)]
    stream = categorize.zipf_stream(merchants, 20_000)
    assert len(stream) == 20_000 and set(stream) <= set(merchants)
    assert stream.count("m0") > stream.count("m1") > stream.count("m10") > stream.count("m99")
    assert categorize.zipf_stream(merchants, 500) == categorize.zipf_stream(merchants, 500)


def test_warm_path_shares_work_but_not_answers() -> None:
    """``predict`` works per distinct text (the warm path's speed-up); rows still get exactly
    what predicting them one by one gives, user memory included."""
    texts = ["tesco stores 5504", "aldi 123", "lidl uk", "netflix.com", "spotify p", "kfc"]
    paths = (
        ["Food & drink/Groceries"] * 3 + ["Bills/Subscriptions"] * 2 + ["Food & drink/Eating out"]
    )
    config = TrainConfig(epochs=1, hidden_dim=32, out_dim=8, threads=1)
    model = fit_categorizer(texts, paths, config)
    model.remember("u1", "NETFLIX.COM", "Leisure/Entertainment")
    batch = ["TESCO STORES 5504", "tesco stores 2503", "", "NETFLIX.COM", "TESCO STORES 5504"]
    batch += ["4423", "NETFLIX.COM", "Spotify P"]
    users = ["u1", None, "u1", "u1", "u2", None, "u2", "u1"]
    batched = model.predict(batch, users)
    assert batched == [model.predict([t], [u])[0] for t, u in zip(batch, users, strict=True)]
    assert batched[0].merchant == batched[1].merchant == "tesco stores"
    assert batched[0] is batched[4]  # one immutable answer per key
    assert (batched[3].source, batched[3].path) == ("user", "Leisure/Entertainment")
    assert batched[6].source == "model" and batched[6].merchant == "netflix"
    assert batched[2].path == batched[5].path == "Uncategorized" and not batched[5].known
    assert (
        model.predict(batch, users)
        == batched
        == model.predict(list(reversed(batch)), users[::-1])[::-1]
    )
    assert model.predict(batch) == [model.predict([t])[0] for t in batch]


def test_quick_run_reports_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "categorize.json"
    argv = ["--quick", "--merchants", "40", "--txns", "3000", "--epochs", "1"]
    assert categorize.main([*argv, "--train-rows", "120", "--no-lock", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads(out.read_text())
    assert printed == report
    assert {"date", "machine", "plan", "merchants", "training", "anchor", "cold", "warm"} <= set(
        report
    )
    assert report["machine"]["nproc"] >= 1 and "gpu" in report["machine"]
    assert report["merchants"]["count"] == 40
    assert report["training"]["rows"] <= 120 and report["training"]["epochs"] == 1
    assert report["anchor"]["strings_per_s"] > 0
    assert report["cold"]["merchants"] == 40 and report["cold"]["merchants_per_s"] > 0
    assert report["cold"]["ratio_to_anchor"] > 0
    assert report["warm"]["txns"] == 3000 and len(report["warm"]["passes_txns_per_s"]) == 3
    assert report["warm"]["txns_per_s"] > 0
    targets = report["targets"]
    assert set(targets) == {"cold_ratio", "warm_txns_per_s"}
    assert targets["cold_ratio"]["measured"] == report["cold"]["ratio_to_anchor"]
    assert targets["warm_txns_per_s"]["measured"] == report["warm"]["txns_per_s"]
    assert all(isinstance(t["pass"], bool) for t in targets.values())
