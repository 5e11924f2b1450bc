"""Every notebook runs top to bottom on a small ledger, and is stored without outputs."""

from __future__ import annotations

import os
from collections import Counter
from datetime import date
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scale_ray.analytics.categorize import merchant_key
from scale_ray.analytics.state import UserStateStore
from scale_ray.demo import generate_tenants
from scale_ray.demo.loader import write_tenants
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.settings import Settings
from tests.conftest import make_txns

#: The categorizer notebook trains models on the real data: tests/test_categorizer_notebook.py.
NOTEBOOKS = sorted(
    p
    for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")
    if p.name not in {"categorizer_evaluation.ipynb", "forecast_explained.ipynb"}
)

#: Demo users with a year of categorized history (salary, rent, card spending, transfers).
DEMO_USERS = 6
DEMO_END = date(2024, 12, 31)


@pytest.fixture
def small_ledger(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    writer = OfflineLedgerWriter(settings)
    # Users with bare rows (no hints, no income): notebooks must cope with them too.
    for user in ("ana", "ben", "chen"):
        rows = make_txns(40, prefix=f"{user}-")
        buckets = settings.num_buckets
        accounts = implied_accounts(rows, "default")
        writer.write(
            transactions_table(user, rows, num_buckets=buckets, source="test"),
            accounts_table(
                user, accounts, num_buckets=buckets, source="test", default_currency="GBP"
            ),
        )
    tenants, _, _ = generate_tenants(DEMO_USERS, years=1, seed=1, end=DEMO_END)
    write_tenants(settings, tenants, writer, source="demo")
    # A rule, a correction and a budget, as users make them through the API.
    first, second = tenants[0], tenants[1]
    merchants = Counter(merchant_key(t.merchant) for t in first.transactions if t.merchant)
    pattern = merchants.most_common(1)[0][0]
    state = UserStateStore(settings)
    rule = {"pattern": pattern, "match": "contains", "category": "Travel/Trips"}
    state.put(first.user_id, "rule", [("rul_demo", rule)])
    state.put(
        second.user_id, "correction", [(second.transactions[1].txn_id, {"category": "Leisure"})]
    )
    budget = {
        "category": "Food & drink",
        "period": "monthly",
        "limit_minor": 40000,
        "currency": "GBP",
    }
    state.put(second.user_id, "budget", [("bud_demo", budget)])
    monkeypatch.setenv("SCALE_DATA_ROOT", settings.data_root)
    monkeypatch.setenv("SCALE_NUM_BUCKETS", str(settings.num_buckets))
    return settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, small_ledger: Settings, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        "strip outputs"
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=dict(os.environ))
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
