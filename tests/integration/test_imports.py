"""Statement imports over HTTP: 202, a Ray task parses, progress with rejections, idempotent."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import SHARED_DATA

from .conftest import App

pytestmark = pytest.mark.integration

BIRMINGHAM = SHARED_DATA / "birmingham_pcard_2016_2017" / "purchase-card-transactions-201709.csv"


def _wait(c: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = c.get(f"/v1/imports/{job_id}").json()
        if status["status"] in ("completed", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"import {job_id} did not finish: {status}")


def _upload(c: httpx.Client, name: str, data: bytes, **fields: str) -> httpx.Response:
    return c.post("/v1/imports", files={"file": (name, data)}, data=fields)


@pytest.mark.skipif(not BIRMINGHAM.exists(), reason="shared data not present")
def test_real_statement_imports_once(app: App) -> None:
    data = BIRMINGHAM.read_bytes()
    with app.client("importer") as c:
        r = _upload(c, BIRMINGHAM.name, data)
        assert r.status_code == 202, r.text
        status = _wait(c, r.json()["job_id"])
        assert status["status"] == "completed", status
        assert status["format"] == "csv:birmingham"
        assert status["rows_written"] == status["rows_parsed"] > 4000
        again = _wait(c, _upload(c, BIRMINGHAM.name, data).json()["job_id"])
        assert (again["rows_written"], again["rows_duplicate"]) == (0, status["rows_parsed"])
        accounts = c.get("/v1/accounts").json()["data"]
        assert sum(a["transactions"] for a in accounts) == status["rows_parsed"]
        assert all(a["account_id"].startswith("card-") for a in accounts)


def test_bad_rows_rejected_with_reasons_good_rows_land(app: App) -> None:
    csv = (
        b"Date,Description,Amount,Currency\n"
        b"2024-03-01,COFFEE,-3.20,GBP\n"
        b"2024-03-02,BROKEN AMOUNT,abc,GBP\n"
        b"2024-02-30,BAD DATE,-1.00,GBP\n"
        b"2024-03-04,SALARY,2500.00,GBP\n"
    )
    with app.client("rejects") as c:
        status = _wait(c, _upload(c, "stmt.csv", csv, account_id="cur-9").json()["job_id"])
        assert status["status"] == "completed"
        assert (status["rows_parsed"], status["rows_written"], status["rows_rejected"]) == (2, 2, 2)
        assert [r["row"] for r in status["rejections"]] == [2, 3]
        assert all(r["reason"] for r in status["rejections"])
        listed = c.get("/v1/transactions").json()["data"]
        assert {t["narration"] for t in listed} == {"COFFEE", "SALARY"}
        assert {t["account_id"] for t in listed} == {"cur-9"}


def test_unreadable_file_fails_clearly(app: App) -> None:
    with app.client("garbage") as c:
        status = _wait(c, _upload(c, "x.bin", b"\x00\x01\x02 not a statement").json()["job_id"])
        assert status["status"] == "failed" and status["error"]


def test_upload_errors_are_4xx(app: App) -> None:
    with app.client("uploader") as c, app.client("other") as other:
        r = c.post("/v1/imports", json={"file": "nope"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "not_multipart"
        r = _upload(c, "big.csv", b"x" * (app.settings.max_upload_bytes + 10))
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = _upload(c, "a.csv", b"Date,Amount\n", format="xls")
        assert r.status_code == 400 and "format" in r.json()["error"]["message"]
        r = c.post("/v1/imports", files={"other": ("a.csv", b"x")})
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_file"
        job = _upload(c, "ok.csv", b"Date,Description,Amount\n2024-01-01,X,-1.00\n", currency="GBP")
        job_id = job.json()["job_id"]
        assert other.get(f"/v1/imports/{job_id}").status_code == 404
        assert c.get("/v1/imports/imp_doesnotexist").status_code == 404
        _wait(c, job_id)
