"""The anomaly monitor core on real Delta tables: flags, notifications, the durable offset."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from scale_ray.demo.generator import DemoTenant, generate_tenants
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.delta import DeltaAppender, open_table
from scale_ray.ledger.keys import user_bucket
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import transactions_table
from scale_ray.models.anomaly.features import build_features
from scale_ray.models.anomaly.flags import FlagStore, flag_id
from scale_ray.models.anomaly.model import AnomalyModel
from scale_ray.models.anomaly.monitor import (
    AnomalyMonitorCore,
    RegistryModelSource,
    anomaly_notification,
    notification_id,
    read_offset,
    write_offset,
)
from scale_ray.models.anomaly.serving import publish_anomaly_model, score_new
from scale_ray.models.registry import ModelRegistry
from scale_ray.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def tenants() -> list[DemoTenant]:
    found, _, _ = generate_tenants(3, years=1, seed=5, anomaly_rate=0.01, end=NOW.date())
    # The generator books up to the end of its last day; keep everything in the past.
    for tenant in found:
        tenant.transactions[:] = [t for t in tenant.transactions if t.booked_at < NOW]
    return found


@pytest.fixture(scope="module")
def model(tenants: list[DemoTenant]) -> AnomalyModel:
    table = pa.concat_tables(
        transactions_table(t.user_id, t.transactions, num_buckets=8, source="demo") for t in tenants
    )
    return AnomalyModel.fit(build_features(table), n_estimators=60, random_state=0)


def publish(settings: Settings, model: AnomalyModel) -> str:
    return publish_anomaly_model(ModelRegistry.from_settings(settings), model, {"test": True})


def write(settings: Settings, user: str, rows: list[ParsedTxn]) -> int:
    """One ledger commit per shard (as the writer actors do); the table version after it."""
    OfflineLedgerWriter(settings).write(
        transactions_table(user, rows, num_buckets=settings.num_buckets, source="test")
    )
    return open_table(settings, "transactions").version()


def plant(txn_id: str, when: datetime, amount_minor: int = -950_000) -> ParsedTxn:
    """A charge no ordinary ledger has: £9,500 at a merchant never seen, at 03:12."""
    return ParsedTxn(
        row_number=1,
        booked_at=when.replace(hour=3, minute=12, second=0, microsecond=0),
        amount_minor=amount_minor,
        currency="GBP",
        narration="LUXURY WATCHES LTD",
        merchant="LUXURY WATCHES LTD",
        account_id="plant-card",
        txn_id=txn_id,
    )


def flags_table(settings: Settings) -> list[dict]:
    return DeltaTable(settings.table_uri("flags")).to_pyarrow_table().to_pylist()


def notifications(settings: Settings) -> list[dict]:
    rows = DeltaTable(settings.table_uri("notifications")).to_pyarrow_table().to_pylist()
    return [r for r in rows if r["kind"] == "anomaly"]


def core_for(settings: Settings, **kw: object) -> AnomalyMonitorCore:
    """A core on the registry's live model; no backfill unless asked (``backfill=True``)."""
    kw.setdefault("backfill", False)
    return AnomalyMonitorCore(settings, RegistryModelSource(settings, check_every_s=0), **kw)


def load_history(settings: Settings, tenants: list[DemoTenant]) -> int:
    for t in tenants:
        version = write(settings, t.user_id, t.transactions)
    return version


def test_planted_anomaly_is_flagged_and_notified_once_across_restarts(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    # Prepare: an existing ledger, then a model and the monitor (no backfill of the ledger).
    load_history(settings, tenants)
    version = publish(settings, model)
    core = core_for(settings, chunk_users=1)  # one user per scoring call and commit
    assert core.step().version is None and flags_table(settings) == []
    ann, ben = tenants[0].user_id, tenants[1].user_id

    # Execute: a fresh £9,500 charge for ann, and one booked 60 days ago for ben.
    write(settings, ann, [plant("p-new", NOW - timedelta(days=2))])
    last = write(settings, ben, [plant("p-old", NOW - timedelta(days=60))])
    report = core.step()

    # Assert: both flagged with a reason; only the recent one notified.
    assert report.version == last and report.model_version == version
    flags = {(f["user_id"], f["txn_id"]): f for f in flags_table(settings)}
    assert {(ann, "p-new"), (ben, "p-old")} <= flags.keys()
    new_flag = flags[(ann, "p-new")]
    assert new_flag["status"] == "open" and new_flag["model_version"] == version
    assert "£9500.00" in new_flag["reason"] and new_flag["score"] > 0.5
    (note,) = notifications(settings)
    assert note["user_id"] == ann
    assert note["notification_id"] == notification_id("p-new")
    assert note["title"] == "Unusual payment of £9500.00 at LUXURY WATCHES LTD"
    assert note["message"] == new_flag["reason"]
    data = json.loads(note["data_json"])
    assert data["flag_id"] == flag_id("p-new") and data["txn_id"] == "p-new"
    assert report.not_notified_old >= 1
    assert read_offset(settings)["version"] == last  # type: ignore[index]

    # A restart resumes after the saved offset: rows committed while down are scored.
    del core
    write(settings, ann, [plant("p-down", NOW - timedelta(days=1), -870_000)])
    restarted = core_for(settings)
    assert restarted.resumed_from == last
    assert restarted.step().flags_written >= 1
    assert (ann, "p-down") in {(f["user_id"], f["txn_id"]) for f in flags_table(settings)}

    # A crash after the commits but before the offset was saved: the replay writes nothing new.
    before_flags, before_notes = len(flags_table(settings)), len(notifications(settings))
    write_offset(settings, {"version": last, "retry": {}})
    replayed = core_for(settings)
    report = replayed.step()
    assert report.replay and report.flags_written == 0 and report.notifications_written == 0
    assert len(flags_table(settings)) == before_flags
    assert len(notifications(settings)) == before_notes == 2
    assert Counter(n["notification_id"] for n in notifications(settings)).most_common(1)[0][1] == 1


def test_crash_between_flags_and_notifications_notifies_on_replay(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    load_history(settings, tenants)
    publish(settings, model)
    core = core_for(settings)
    start = core.offset
    ann = tenants[0].user_id
    write(settings, ann, [plant("p1", NOW - timedelta(days=3))])
    # The previous process recorded the flag, then died before the notification commit.
    history = DeltaTable(settings.table_uri("transactions")).to_pyarrow_table()
    results = score_new(model, history, {"p1"})
    assert FlagStore(settings).record([r for r in results if r.user_id == ann], "earlier")
    write_offset(settings, {"version": start, "retry": {}})

    report = core_for(settings).step()

    assert report.replay and report.flags_written == 0
    assert [n["notification_id"] for n in notifications(settings)] == [notification_id("p1")]
    (flag,) = flags_table(settings)
    assert flag["model_version"] == "earlier"  # the flag in the table, not a re-scored one


def test_no_model_holds_the_offset_until_one_is_published(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    baseline = load_history(settings, tenants)
    core = core_for(settings)
    assert read_offset(settings)["version"] == baseline  # type: ignore[index]
    ann = tenants[0].user_id
    last = write(settings, ann, [plant("p1", NOW - timedelta(days=1))])

    assert core.step().no_model
    assert core.offset == baseline and read_offset(settings)["version"] == baseline  # type: ignore[index]
    # Even a restart while no model exists keeps the baseline.
    core = core_for(settings)
    assert core.step().no_model and core.offset == baseline

    version = publish(settings, model)
    report = core.step()
    assert report.version == last and report.model_version == version
    assert (ann, "p1") in {(f["user_id"], f["txn_id"]) for f in flags_table(settings)}
    assert read_offset(settings)["version"] == last  # type: ignore[index]

    # A newer live version is picked up at the next check.
    newer = publish(settings, model)
    write(settings, ann, [plant("p2", NOW - timedelta(hours=5), -640_000)])
    assert core.step().model_version == newer


def test_imported_statement_is_flagged_but_only_recent_charges_notify(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    # The first two users exist; the third imports a whole year in one commit.
    load_history(settings, tenants[:2])
    publish(settings, model)
    core = core_for(settings)
    importer = tenants[2]
    write(settings, importer.user_id, importer.transactions)

    report = core.step()

    flags = [f for f in flags_table(settings) if f["user_id"] == importer.user_id]
    notes = notifications(settings)
    assert report.scored > 500 and len(flags) >= 3
    assert len(notes) < len(flags)
    booked = {t.txn_id: t.booked_at for t in importer.transactions}
    for note in notes:
        txn_id = json.loads(note["data_json"])["txn_id"]
        assert booked[txn_id] >= NOW - timedelta(days=14)
    assert report.not_notified_old == len(flags) - len(notes)


def test_a_user_whose_scoring_fails_is_kept_for_retry_without_blocking_others(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    load_history(settings, tenants)
    publish(settings, model)
    core = core_for(settings, failed_retry_s=0)
    ann = tenants[0].user_id
    # A row no writer would accept (the currency is not ISO 4217) poisons one user's features.
    bad = transactions_table(
        "poison", [plant("x1", NOW - timedelta(days=1))], num_buckets=8, source="test"
    )
    bad = bad.set_column(
        bad.schema.get_field_index("currency"), "currency", pa.array(["??"], pa.string())
    )
    DeltaAppender(settings, "transactions").append(bad)
    last = write(settings, ann, [plant("p1", NOW - timedelta(days=1))])

    report = core.step()

    assert report.failed_users == 1 and core.retry_users == {"poison"}
    assert (ann, "p1") in {(f["user_id"], f["txn_id"]) for f in flags_table(settings)}
    # The offset moves on, with the unscored rows saved beside it.
    saved = read_offset(settings)
    assert saved == {**saved, "version": last, "retry": {"poison": ["x1"]}}
    assert core_for(settings).retry_users == {"poison"}
    # A retry that fails again keeps them; the others are not scored again.
    again = core.step()
    assert again.failed_users == 1 and again.users == 0 and again.flags_written == 0


def test_notification_text() -> None:
    flag = {"txn_id": "t1", "flag_id": "f", "score": 0.71234567, "reason": "At 03:12"}
    txn = {"amount_minor": -4513, "currency": "GBP", "merchant": None, "narration": "TESCO"}
    note = anomaly_notification(flag, txn)
    assert note["title"] == "Unusual payment of £45.13 at TESCO"
    assert note["message"] == "At 03:12" and note["kind"] == "anomaly"
    assert json.loads(note["data_json"]) == {"flag_id": "f", "txn_id": "t1", "score": 0.712346}


# -- backfill of the ledger that existed before the first start ------------------------------


def ledger_with_plants(settings: Settings, tenants: list[DemoTenant]) -> int:
    """The demo ledger plus a recent and an old planted charge; the table version after it."""
    load_history(settings, tenants)
    write(settings, tenants[0].user_id, [plant("p-recent", NOW - timedelta(days=2))])
    return write(settings, tenants[1].user_id, [plant("p-old", NOW - timedelta(days=60))])


def debit_count(settings: Settings, version: int) -> int:
    table = DeltaTable(settings.table_uri("transactions"), version=version).to_pyarrow_table()
    return sum(1 for a in table.column("amount_minor").to_pylist() if a < 0)


def run_backfill(core: AnomalyMonitorCore, max_steps: int = 20) -> list:
    reports = []
    while core.backfilling:
        assert len(reports) < max_steps, "the backfill does not end"
        reports.append(core.step())
    return reports


def flag_keys(settings: Settings) -> Counter:
    return Counter((f["user_id"], f["txn_id"]) for f in flags_table(settings))


def test_first_start_backfills_the_existing_ledger_bucket_by_bucket(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    # Prepare: a ledger (with a recent and an old planted charge), no offset file, no model.
    pinned = ledger_with_plants(settings, tenants)
    core = core_for(settings, backfill=True, chunk_users=1)
    saved = read_offset(settings)
    assert saved is not None and saved["version"] is None
    assert saved["backfill"] == {"version": pinned, "next_bucket": 0}
    assert core.offset is None and core.snapshot()["backfill"]["buckets"] == 8
    # No model: nothing happens, the backfill waits.
    assert core.step().no_model and read_offset(settings)["backfill"]["next_bucket"] == 0  # type: ignore[index]

    # Execute: publish a model, step until the backfill is done.
    publish(settings, model)
    reports = run_backfill(core)

    # Assert: one bucket with debits per step, all buckets done, the offset is the pinned version.
    busy = {user_bucket(t.user_id, 8) for t in tenants}
    assert len(reports) == len(busy)
    assert all(r.backfill_version == pinned and r.version is None for r in reports)
    assert sum(r.backfill_buckets for r in reports) == 8 and reports[-1].backfill_done
    assert sum(r.backfill_rows for r in reports) == debit_count(settings, pinned)
    assert core.offset == pinned and core.snapshot()["backfill"] is None
    assert core.stats["backfill_buckets_done"] == 8
    assert core.stats["backfill_rows"] == debit_count(settings, pinned)
    saved = read_offset(settings)
    assert saved is not None and saved["version"] == pinned and "backfill" not in saved
    # Both planted charges are flagged; only the recent one notified.
    flags = flag_keys(settings)
    ann, ben = tenants[0].user_id, tenants[1].user_id
    assert {(ann, "p-recent"), (ben, "p-old")} <= flags.keys() and max(flags.values()) == 1
    notified = {json.loads(n["data_json"])["txn_id"] for n in notifications(settings)}
    assert "p-recent" in notified and "p-old" not in notified
    booked = {t.txn_id: t.booked_at for tenant in tenants for t in tenant.transactions}
    assert all(booked[t] >= NOW - timedelta(days=14) for t in notified - {"p-recent"})
    assert sum(r.not_notified_old for r in reports) >= 1
    # Normal following resumes from the pinned version.
    assert core.step().version is None
    last = write(settings, ann, [plant("p-next", NOW - timedelta(days=1))])
    report = core.step()
    assert report.version == last and report.backfill_version is None
    assert flag_keys(settings)[(ann, "p-next")] == 1


def test_a_crash_mid_backfill_resumes_at_the_next_bucket_and_later_commits_are_scored_once(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    pinned = ledger_with_plants(settings, tenants)
    publish(settings, model)
    first = core_for(settings, backfill=True)
    done = first.step()
    assert done.backfill_rows > 0 and not done.backfill_done
    next_bucket = read_offset(settings)["backfill"]["next_bucket"]  # type: ignore[index]
    assert next_bucket == done.backfill_buckets
    ann = tenants[0].user_id
    during = write(settings, ann, [plant("p-during", NOW - timedelta(days=1))])

    # Execute: the process dies; a new one resumes the backfill.
    del first
    second = core_for(settings, backfill=True)
    assert second.offset is None and second.snapshot()["backfill"] == {
        "version": pinned,
        "next_bucket": next_bucket,
        "buckets": 8,
    }
    assert second.stats["backfill_buckets_done"] == next_bucket
    reports = run_backfill(second)

    # Assert: the rest of the snapshot, and only it, was scored; nothing written twice.
    assert done.backfill_rows + sum(r.backfill_rows for r in reports) == debit_count(
        settings, pinned
    )
    assert reports[0].replay and second.offset == pinned
    flags = flag_keys(settings)
    assert max(flags.values()) == 1 and (ann, "p-during") not in flags
    # The commit made during the backfill is scored by the normal path, once.
    report = second.step()
    assert report.version == during and report.scored == 1
    assert flag_keys(settings)[(ann, "p-during")] == 1
    assert second.step().version is None and flag_keys(settings)[(ann, "p-during")] == 1
    notes = Counter(n["notification_id"] for n in notifications(settings))
    assert notes[notification_id("p-during")] == 1 and max(notes.values()) == 1


def test_a_bucket_half_done_before_a_crash_is_replayed_without_duplicates(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    ledger_with_plants(settings, tenants)
    publish(settings, model)
    # The previous process wrote a bucket's flags and notifications, then died before saving.
    first = core_for(settings, backfill=True, chunk_users=1)
    before = read_offset(settings)
    done = first.step()
    written = len(flags_table(settings)), len(notifications(settings))
    assert done.flags_written > 0
    write_offset(settings, before)  # type: ignore[arg-type]

    replayed = core_for(settings, backfill=True)
    report = replayed.step()

    assert report.replay and report.backfill_rows == done.backfill_rows
    assert report.flags_written == 0 and report.notifications_written == 0
    assert (len(flags_table(settings)), len(notifications(settings))) == written
    run_backfill(replayed)
    assert max(flag_keys(settings).values()) == 1
    assert max(Counter(n["notification_id"] for n in notifications(settings)).values()) == 1


def test_without_backfill_the_existing_ledger_is_not_scored(
    settings: Settings, tenants: list[DemoTenant], model: AnomalyModel
) -> None:
    pinned = ledger_with_plants(settings, tenants)
    publish(settings, model)
    # The default comes from the settings.
    quiet = Settings(
        data_root=settings.data_root, num_buckets=8, writer_shards=2, anomaly_backfill=False
    )
    core = AnomalyMonitorCore(quiet, RegistryModelSource(quiet, check_every_s=0))

    assert not core.backfill and not core.backfilling and core.offset == pinned
    assert read_offset(settings)["version"] == pinned  # type: ignore[index]
    report = core.step()
    assert report.version is None and report.backfill_version is None
    assert flags_table(settings) == [] and core.snapshot()["backfill"] is None


def test_an_empty_ledger_needs_no_backfill(settings: Settings) -> None:
    core = core_for(settings, backfill=True)
    assert not core.backfilling and core.offset == open_table(settings, "transactions").version()
    saved = read_offset(settings)
    assert saved is not None and "backfill" not in saved
