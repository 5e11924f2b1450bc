"""Ingest benchmark: durable rows/s and acknowledgement latency of ledger writes.

Three ways of writing the same Arrow tables to a ``user_bucket``-partitioned Delta table:

* **anchor** - raw ``deltalake.write_deltalake(uri, table, mode="append")``, one commit a batch,
  sequential, in this process: the floor cost of a Delta append, nothing else;
* **handle** - :class:`LedgerWriterClient` to the LedgerWriter actors (dedup index, group
  commit), both ``await write_async`` with several batches in flight and sequential ``write``;
* **http** - ``POST /v1/transactions`` over loopback through Serve and the Gateway (JSON parsing,
  validation, Arrow build, then the same writer actors).

Every write counts only once it is acknowledged, and acknowledgements come after the Delta
commit. Each measurement starts on a fresh data root with its own writer actors, warmed up
(tables created, every user's accounts already in the ledger, as in steady state). Then the
ack latency of single-transaction posts, 8 and 1 in flight, through the handle and over HTTP,
and an in-process breakdown (no Ray) of where a write's time goes.

Usage: ``python benchmarks/ingest.py [--quick] [--rows N] [--out PATH] [--profile DIR]``.
"""

from __future__ import annotations

import os

# Ray reads its auth mode when first imported: token auth, as ``make`` and the tests run it.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import json
import math
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import deltalake
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from deltalake import DeltaTable, write_deltalake
from ray import serve

from scale_ray.api_input import decode_json, parse_transactions_body
from scale_ray.auth import mint_token
from scale_ray.ingest.records import ParsedTxn
from scale_ray.ledger.delta import TABLE_CONFIGURATION, DeltaAppender
from scale_ray.ledger.offline import OfflineLedgerWriter
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.ledger.schema import TRANSACTIONS
from scale_ray.ledger.writer_client import LedgerWriterClient, writer_name
from scale_ray.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 100, 10_000)
#: Batches in flight: handle ``write_async`` (as the gateway calls it) and HTTP, by batch size.
HANDLE_CONCURRENCY = 8
HTTP_CONCURRENCY = {1: 32, 100: 16, 10_000: 4}
LATENCY_CONCURRENCY = (8, 1)

TARGET_DURABLE_ROWS_S = 50_000
TARGET_LARGE_BATCH_RATIO = 0.70
TARGET_P99_MS = 50.0

USERS = 1_000
MERCHANTS = (
    "SWIGGY BANGALORE", "ZOMATO ONLINE ORDER", "AMAZON PAY INDIA", "UBER INDIA SYSTEMS",
    "BIGBASKET SUPERMARKET", "IRCTC E-TICKETING", "NETFLIX.COM", "BESCOM ELECTRICITY BILL",
    "APOLLO PHARMACY", "HPCL FUEL STATION", "STARBUCKS COFFEE", "TESCO STORES 2231",
    "TFL TRAVEL CHARGE", "SALARY ACME CORP", "RENT TRANSFER", "ATM CASH WITHDRAWAL",
)  # fmt: skip
MODES = ("UPI", "CARD", "NEFT", "IMPS")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to run: writes per measurement are capped by count and by time."""

    rows: int  # rows per throughput measurement (at most)
    max_writes: dict[int, int]  # writes per throughput measurement, by batch size (at most)
    seconds: float  # time budget of one throughput measurement
    latency_posts: int  # posts per latency measurement
    warmup_posts: int
    breakdown_writes: int  # in-process 10,000-row writes timed step by step
    drift_commits: int  # one-row commits timed as the table's version grows

    def writes(self, batch: int) -> int:
        return max(2, min(self.max_writes[batch], math.ceil(self.rows / batch)))


FULL = Plan(
    rows=1_500_000,
    max_writes={1: 4_000, 100: 2_000, 10_000: 1_000},
    seconds=12.0,
    latency_posts=600,
    warmup_posts=64,
    breakdown_writes=20,
    drift_commits=400,
)
QUICK = Plan(
    rows=60_000,
    max_writes={1: 300, 100: 150, 10_000: 1_000},
    seconds=1.5,
    latency_posts=80,
    warmup_posts=8,
    breakdown_writes=4,
    drift_commits=60,
)


# -- data ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Batch:
    """One user's batch: the Arrow tables the handle gets and the JSON items HTTP gets."""

    user_id: str
    txns: pa.Table
    accounts: pa.Table
    items: list[dict[str, str]]


class Workload:
    """Realistic rows: ~1,000 users, one currency each, two accounts, merchant narrations."""

    def __init__(self, settings: Settings, seed: int = 7) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.users = [f"user-{i:04d}" for i in range(USERS)]
        self.currency = {
            u: self.rng.choice(("INR", "INR", "INR", "GBP", "USD")) for u in self.users
        }
        self.start = datetime(2024, 1, 1, tzinfo=UTC)
        self._pools: dict[int, list[Batch]] = {}

    def _rows(self, user: str, n: int) -> list[ParsedTxn]:
        rng, currency = self.rng, self.currency[user]
        rows = []
        for i in range(n):
            credit = rng.random() < 0.08
            minor = int(rng.lognormvariate(11.5 if credit else 7.5, 1.0)) + 1
            rows.append(
                ParsedTxn(
                    row_number=i + 1,
                    booked_at=self.start + timedelta(seconds=rng.randrange(365 * 86_400)),
                    amount_minor=minor if credit else -minor,
                    currency=currency,
                    narration=f"{rng.choice(MODES)} {rng.choice(MERCHANTS)}",
                    account_id="savings" if credit or rng.random() < 0.6 else "card",
                    txn_id=f"{i:05d}",
                )
            )
        return rows

    def _batch(self, user: str, n: int) -> Batch:
        rows = self._rows(user, n)
        s = self.settings
        txns = transactions_table(user, rows, num_buckets=s.num_buckets, source="bench")
        accounts = accounts_table(
            user,
            implied_accounts(rows, "default"),
            num_buckets=s.num_buckets,
            source="bench",
            default_currency=rows[0].currency,
        )
        items = [
            {
                "txn_id": r.txn_id or "",
                "amount": _decimal(r.amount_minor),
                "currency": r.currency,
                "booked_at": r.booked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "narration": r.narration,
                "account_id": r.account_id or "default",
            }
            for r in rows
        ]
        return Batch(user, txns, accounts, items)

    def pool(self, batch: int) -> list[Batch]:
        """Distinct base batches of ``batch`` rows, each from a different user."""
        if batch not in self._pools:
            count = {1: USERS, 100: 200}.get(batch, 8)
            users = self.rng.sample(self.users, count)
            self._pools[batch] = [self._batch(u, batch) for u in users]
        return self._pools[batch]

    def all_accounts(self) -> pa.Table:
        """Every user's two accounts, to warm a fresh ledger up to steady state."""
        s = self.settings
        tables = []
        for user in self.users:
            rows = [
                ParsedTxn(1, self.start, 1, self.currency[user], "x", account_id=acc)
                for acc in ("savings", "card")
            ]
            tables.append(
                accounts_table(
                    user,
                    implied_accounts(rows, "default"),
                    num_buckets=s.num_buckets,
                    source="bench",
                    default_currency=self.currency[user],
                )
            )
        return pa.concat_tables(tables)

    def one_row_per_user(self, tag: str) -> pa.Table:
        """One transaction for every user (touches every bucket), under a fresh id prefix."""
        return pa.concat_tables([with_ids(b.txns, tag) for b in self.pool(1)])

    def batches(self, batch: int, count: int, tag: str) -> list[Batch]:
        """``count`` batches cycling over the pool, with txn ids made unique by ``tag``."""
        pool = self.pool(batch)
        out = []
        for j in range(count):
            base = pool[j % len(pool)]
            prefix = f"{tag}{j}-"
            out.append(dataclasses.replace(base, txns=with_ids(base.txns, prefix)))
        return out


def _decimal(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 100)
    return f"{sign}{whole}.{frac:02d}"


def with_ids(table: pa.Table, prefix: str) -> pa.Table:
    index = table.schema.get_field_index("txn_id")
    ids = pc.binary_join_element_wise(pa.scalar(prefix), table.column(index), "")
    return table.set_column(index, table.schema.field(index), ids)


def http_body(batch: Batch, prefix: str) -> bytes:
    items = [{**item, "txn_id": prefix + item["txn_id"]} for item in batch.items]
    return json.dumps({"transactions": items}).encode()


# -- measurement -----------------------------------------------------------------------------
@dataclasses.dataclass
class Measured:
    rows: int = 0
    writes: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = dataclasses.field(default_factory=list)

    def summary(self, **extra: Any) -> dict[str, Any]:
        lat = np.array(self.latencies_s) * 1000.0
        out: dict[str, Any] = {
            "rows": self.rows,
            "writes": self.writes,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows / self.seconds, 1) if self.seconds else None,
            "writes_per_s": round(self.writes / self.seconds, 1) if self.seconds else None,
            # Contention from outside: load and Ray clusters running (ours is one).
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "ray_clusters": _raylets(),
        }
        if len(lat):
            out |= {
                "ack_ms": {
                    "p50": round(float(np.percentile(lat, 50)), 2),
                    "p90": round(float(np.percentile(lat, 90)), 2),
                    "p99": round(float(np.percentile(lat, 99)), 2),
                    "max": round(float(lat.max()), 2),
                    "mean": round(float(lat.mean()), 2),
                }
            }
            if len(lat) >= 50:  # drift: the same load's first and last tenth, by completion
                tenth = len(lat) // 10
                out["ack_ms"]["p50_first_tenth"] = round(float(np.median(lat[:tenth])), 2)
                out["ack_ms"]["p50_last_tenth"] = round(float(np.median(lat[-tenth:])), 2)
        return out | extra


def run_sequential(
    items: Iterable[Any], send: Callable[[Any], int], seconds: float, expect: int
) -> Measured:
    """Send items one after another until done or ``seconds`` pass; ``send`` returns rows."""
    m = Measured()
    start = time.perf_counter()
    deadline = start + seconds
    for item in items:
        t0 = time.perf_counter()
        written = send(item)
        m.latencies_s.append(time.perf_counter() - t0)
        _check(written, expect)
        m.rows += written
        m.writes += 1
        if time.perf_counter() > deadline:
            break
    m.seconds = time.perf_counter() - start
    return m


async def run_concurrent(
    items: Iterable[Any],
    send: Callable[[Any], Awaitable[int]],
    concurrency: int,
    seconds: float,
    expect: int,
) -> Measured:
    """``concurrency`` workers take items from one iterator until it ends or time is up."""
    m = Measured()
    it: Iterator[Any] = iter(items)
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        for item in it:
            t0 = time.perf_counter()
            written = await send(item)
            m.latencies_s.append(time.perf_counter() - t0)
            _check(written, expect)
            m.rows += written
            m.writes += 1
            if time.perf_counter() > deadline:
                return

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    m.seconds = time.perf_counter() - start
    return m


def _timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    return wrapper


def _check(written: int, expect: int) -> None:
    if written != expect:
        raise RuntimeError(f"a write acknowledged {written} new rows, expected {expect}")


def _commits(client: LedgerWriterClient) -> int:
    return sum(int(s["commits"]) for s in client.stats())


def ledger_rows(settings: Settings) -> int:
    return DeltaTable(settings.table_uri("transactions")).to_pyarrow_dataset().count_rows()


# -- profiling (optional) --------------------------------------------------------------------
def _pids(match: Callable[[str], bool]) -> list[int]:
    """Processes whose command line (arguments joined by spaces) satisfies ``match``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if match(cmdline):
                pids.append(int(proc.name))
    return pids


def _raylets() -> int:
    """Local Ray clusters running now (one raylet each): others compete for the cores."""
    return len(_pids(lambda cmd: cmd.split(" ", 1)[0].endswith("/raylet")))


class Profiler:
    """``py-spy record`` of the writer actors, gateway replica and Serve proxy while measuring.

    Sampling costs CPU on a small machine: figures from a profiled run are not the benchmark's.
    """

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.summaries: dict[str, Any] = {}

    @contextlib.contextmanager
    def record(self, name: str, client: LedgerWriterClient) -> Iterator[None]:
        if self.out_dir is None:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        targets = {
            f"writer{s}": ray.get(client.actor(s).__ray_call__.remote(lambda _self: os.getpid()))
            for s in range(client.settings.writer_shards)
        }
        for label, title in (
            ("gateway", "ray::ServeReplica:scale:Gateway"),
            ("proxy", "ray::ProxyActor"),
        ):
            for i, pid in enumerate(_pids(lambda cmd, t=title: cmd.startswith(t))):
                targets[f"{label}{i}"] = pid
        procs = {}
        for label, pid in targets.items():
            path = self.out_dir / f"{name}.{label}.txt"
            cmd = [self.spy, "record", "--nonblocking", "-r", "100", "-f", "raw"]
            cmd += ["-p", str(pid), "-o", str(path)]
            procs[label] = (
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                path,
            )
        time.sleep(0.5)
        try:
            yield
        finally:
            summary = {}
            for label, (proc, path) in procs.items():
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=20)
                if path.exists():
                    summary[label] = summarize_profile(path)
            self.summaries[name] = summary


#: Leaf frames where a thread only waits (py-spy samples blocked threads too).
_IDLE_LEAVES = {
    "Condition.wait", "Worker.main_loop", "Thread.run", "_worker", "select", "PythonGCThread.run",
    "UserCallableWrapper.__init__.<locals>._run_user_code_event_loop", "_run_once", "wait",
}  # fmt: skip


def _frame(raw: str) -> str:
    """``func (path/file.py:123)`` -> ``func (file.py)``: one entry per function."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Top functions by inclusive and by self samples, from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1].split(" (")[0] in _IDLE_LEAVES:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    pct = {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)} if total else {}
    self_pct = {k: round(100 * v / total, 1) for k, v in own.most_common(top)} if total else {}
    return {"busy_samples": total, "inclusive_pct": pct, "self_pct": self_pct}


# -- stages ----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.plan = dataclasses.replace(
            QUICK if args.quick else FULL,
            **({"rows": args.rows} if args.rows else {}),
        )
        self.quick = args.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
        self.run_id = uuid.uuid4().hex[:8]
        self.base = Settings.from_env(
            data_root=str(self.tmp / "root"),
            ray_namespace=f"scale-bench-{self.run_id}",
            auth_secret=secrets.token_urlsafe(32),
        )
        self.work = Workload(self.base)
        self.port = _free_port()
        self.gateway_settings: Settings | None = None
        self.profiler = Profiler(Path(args.profile) if args.profile else None)
        self.results: dict[str, Any] = {
            "anchor": {},
            "handle_async": {},
            "handle_sync": {},
            "http": {},
            "latency": {"handle": {}, "http": {}},
            "breakdown": {},
        }

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def fresh(self, name: str) -> Settings:
        """Settings for a new, empty ledger served by its own writer actors."""
        return dataclasses.replace(
            self.base,
            data_root=str(self.tmp / name),
            ray_namespace=f"scale-bench-{self.run_id}-{name}",
        )

    def retire(self, settings: Settings) -> None:
        """Stop the writer actors of a finished measurement and delete its data."""
        for shard in range(settings.writer_shards):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(writer_name(shard), namespace=settings.ray_namespace))
        shutil.rmtree(settings.data_root, ignore_errors=True)

    def warm_ledger(self, settings: Settings, client: LedgerWriterClient) -> None:
        """Steady state: every user's accounts exist and every bucket was written once."""
        empty = TRANSACTIONS.empty_table()
        client.write(empty, self.work.all_accounts())
        ack = client.write(self.work.one_row_per_user("warm-"))
        assert ack.written == USERS, ack

    # -- in-process breakdown ----------------------------------------------------------------
    def breakdown(self) -> None:
        """Where a write's time goes, measured in this process without Ray or HTTP."""
        out: dict[str, Any] = {}
        # The gateway's work on one 10,000-row POST body before it calls the writer.
        base = self.work.pool(10_000)[0]
        body = http_body(base, "g-")
        steps: dict[str, list[float]] = {"json_decode": [], "validate": [], "arrow_build": []}
        s = self.base
        for _ in range(max(2, self.plan.breakdown_writes // 4)):
            t0 = time.perf_counter()
            raw = decode_json(body)
            t1 = time.perf_counter()
            rows = parse_transactions_body(raw, s.max_batch)
            t2 = time.perf_counter()
            transactions_table(base.user_id, rows, num_buckets=s.num_buckets, source="api")
            accounts_table(
                base.user_id,
                implied_accounts(rows, "default"),
                num_buckets=s.num_buckets,
                source="api",
                default_currency=rows[0].currency,
            )
            t3 = time.perf_counter()
            for key, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                steps[key].append(seconds * 1000)
        out["gateway_ms_per_10k_rows"] = {
            k: round(float(np.median(v)), 1) for k, v in steps.items()
        }
        out["gateway_ms_per_10k_rows"]["body_mb"] = round(len(body) / 1e6, 2)

        # The writer core (dedup index, casts, Delta append) on 10,000-row writes, no Ray.
        settings = self.fresh("breakdown-core")
        writer = OfflineLedgerWriter(settings)
        writer.write(TRANSACTIONS.empty_table(), self.work.all_accounts())
        writer.write(self.work.one_row_per_user("warm-"))
        appends: list[float] = []
        for core in writer.cores.values():
            core.transactions.append = _timed(core.transactions.append, appends)  # type: ignore[method-assign]
        totals = []
        for b in self.work.batches(10_000, self.plan.breakdown_writes, "c-"):
            appends.clear()
            t0 = time.perf_counter()
            writer.write(b.txns, b.accounts)
            totals.append((time.perf_counter() - t0, sum(appends)))
        total_ms = float(np.median([t for t, _ in totals])) * 1000
        append_ms = float(np.median([a for _, a in totals])) * 1000
        out["writer_core_ms_per_10k_write"] = {
            "total": round(total_ms, 1),
            "delta_append": round(append_ms, 1),
            "dedup_and_rest": round(total_ms - append_ms, 1),
        }
        shutil.rmtree(settings.data_root, ignore_errors=True)

        # One-row commits as the table grows: DeltaAppender's open table vs a fresh open by URI.
        drift: dict[str, Any] = {}
        blocks = 4
        for mode in ("delta_appender_open_table", "write_deltalake_uri"):
            settings = self.fresh(f"breakdown-{mode}")
            appender = DeltaAppender(settings, "transactions")
            uri = settings.table_uri("transactions")
            lat = []
            for b in self.work.batches(1, self.plan.drift_commits, "d-"):
                t0 = time.perf_counter()
                if mode == "write_deltalake_uri":
                    write_deltalake(uri, b.txns, mode="append", partition_by=["user_bucket"])
                else:
                    appender.append(b.txns)
                lat.append((time.perf_counter() - t0) * 1000)
            per_block = np.array_split(np.array(lat), blocks)
            drift[mode] = [round(float(np.median(x)), 1) for x in per_block]
            shutil.rmtree(settings.data_root, ignore_errors=True)
        drift["commits_per_block"] = self.plan.drift_commits // blocks
        out["one_row_commit_ms_by_version"] = drift
        self.results["breakdown"] = out
        core, gw = out["writer_core_ms_per_10k_write"], out["gateway_ms_per_10k_rows"]
        self.log(
            f"breakdown: core 10k write {core['total']} ms ({core['delta_append']} Delta), "
            f"gateway validate {gw['validate']} ms / 10k rows, 1-row commit ms by version "
            f"{drift['delta_appender_open_table']} (open table) vs "
            f"{drift['write_deltalake_uri']} (by uri)"
        )

    # -- anchor ------------------------------------------------------------------------------
    def anchor(self, batch: int) -> None:
        root = self.tmp / f"anchor-{batch}"
        uri = str(root / "transactions")
        DeltaTable.create(
            uri,
            schema=TRANSACTIONS,
            partition_by=["user_bucket"],
            configuration=TABLE_CONFIGURATION,
        )
        warm = self.work.one_row_per_user("warm-")
        write_deltalake(uri, warm, mode="append", partition_by=["user_bucket"])
        batches = self.work.batches(batch, self.plan.writes(batch), f"a{batch}-")

        def send(b: Batch) -> int:
            write_deltalake(uri, b.txns, mode="append", partition_by=["user_bucket"])
            return b.txns.num_rows

        m = run_sequential(batches, send, self.plan.seconds, batch)
        self.results["anchor"][str(batch)] = m.summary(concurrency=1)
        self.log(f"anchor   batch={batch:>6}: {m.rows / m.seconds:>11,.0f} rows/s")
        shutil.rmtree(root, ignore_errors=True)

    # -- handle ------------------------------------------------------------------------------
    def handle(self, batch: int, *, concurrent: bool) -> None:
        mode = "async" if concurrent else "sync"
        settings = self.fresh(f"handle-{mode}-{batch}")
        client = LedgerWriterClient(settings)
        self.warm_ledger(settings, client)
        batches = self.work.batches(batch, self.plan.writes(batch), f"h{mode}{batch}-")

        async def send_async(b: Batch) -> int:
            return (await client.write_async(b.txns, b.accounts)).written

        def send_sync(b: Batch) -> int:
            return client.write(b.txns, b.accounts).written

        with self.profiler.record(f"handle-{mode}-{batch}", client):
            if concurrent:
                m = asyncio.run(
                    run_concurrent(
                        batches, send_async, HANDLE_CONCURRENCY, self.plan.seconds, batch
                    )
                )
            else:
                m = run_sequential(batches, send_sync, self.plan.seconds, batch)
        stored = ledger_rows(settings) - USERS
        if stored != m.rows:
            raise RuntimeError(f"ledger holds {stored} benchmark rows, {m.rows} were acked")
        stats = client.stats()
        summary = m.summary(
            concurrency=HANDLE_CONCURRENCY if concurrent else 1,
            ratio_to_anchor=self._ratio(m, batch),
            commits=sum(s["commits"] for s in stats),
            table_versions=[s["version"] for s in stats],
        )
        self.results[f"handle_{mode}"][str(batch)] = summary
        self.log(
            f"handle-{mode:<5} batch={batch:>6}: {m.rows / m.seconds:>11,.0f} rows/s "
            f"({summary['ratio_to_anchor']:.2f}x anchor, {summary['commits']} commits)"
        )
        self.retire(settings)

    def _ratio(self, m: Measured, batch: int) -> float | None:
        anchor = self.results["anchor"].get(str(batch), {}).get("rows_per_s")
        return round(m.rows / m.seconds / anchor, 3) if anchor and m.seconds else None

    # -- http --------------------------------------------------------------------------------
    def deploy(self, name: str) -> tuple[Settings, LedgerWriterClient]:
        """(Re)deploy the gateway onto a fresh ledger; returns its settings and a warm client."""
        from deployments.app import AppArgs, build_app

        settings = self.fresh(name)
        os.environ.update(settings.as_env())
        serve.run(build_app(AppArgs(data_root=settings.data_root)), name="scale", route_prefix="/")
        if self.gateway_settings is not None:
            self.retire(self.gateway_settings)
        self.gateway_settings = settings
        # Same settings as the gateway, hence the same writer actors (one writer per bucket).
        client = LedgerWriterClient(settings)
        self.warm_ledger(settings, client)
        return settings, client

    def _http_client(self, concurrency: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", timeout=300, limits=limits
        )

    def _requests(
        self, settings: Settings, batch: int, count: int, tag: str
    ) -> list[tuple[bytes, dict[str, str]]]:
        tokens: dict[str, str] = {}
        out = []
        pool = self.work.pool(batch)
        for j in range(count):
            b = pool[j % len(pool)]
            if b.user_id not in tokens:
                tokens[b.user_id] = "Bearer " + mint_token(settings, b.user_id)
            headers = {"Authorization": tokens[b.user_id], "Content-Type": "application/json"}
            out.append((http_body(b, f"{tag}{j}-"), headers))
        return out

    async def _post_all(
        self,
        settings: Settings,
        requests: list[tuple[bytes, dict[str, str]]],
        batch: int,
        concurrency: int,
        seconds: float,
    ) -> Measured:
        async with self._http_client(concurrency) as http:

            async def send(req: tuple[bytes, dict[str, str]]) -> int:
                response = await http.post("/v1/transactions", content=req[0], headers=req[1])
                if response.status_code != 201:
                    raise RuntimeError(f"POST answered {response.status_code}: {response.text}")
                return int(response.json()["written"])

            warm = self._requests(settings, 1, self.plan.warmup_posts, f"w{batch}-{concurrency}-")
            await run_concurrent(warm, send, min(concurrency, 8), 60.0, 1)
            return await run_concurrent(requests, send, concurrency, seconds, batch)

    def http(self, batch: int) -> None:
        settings, client = self.deploy(f"http-{batch}")
        concurrency = HTTP_CONCURRENCY[batch]
        requests = self._requests(settings, batch, self.plan.writes(batch), f"p{batch}-")
        with self.profiler.record(f"http-{batch}", client):
            m = asyncio.run(
                self._post_all(settings, requests, batch, concurrency, self.plan.seconds)
            )
        stored = ledger_rows(settings) - USERS - self.plan.warmup_posts
        if stored != m.rows:
            raise RuntimeError(f"ledger holds {stored} benchmark rows, {m.rows} were acked")
        summary = m.summary(
            concurrency=concurrency,
            ratio_to_anchor=self._ratio(m, batch),
            commits=_commits(client),
        )
        self.results["http"][str(batch)] = summary
        self.log(
            f"http         batch={batch:>6}: {m.rows / m.seconds:>11,.0f} rows/s "
            f"({summary['ratio_to_anchor']:.2f}x anchor, {summary['commits']} commits)"
        )

    # -- latency -----------------------------------------------------------------------------
    def latency_handle(self) -> None:
        settings = self.fresh("latency-handle")
        client = LedgerWriterClient(settings)
        self.warm_ledger(settings, client)
        for concurrency in LATENCY_CONCURRENCY:
            posts = self.work.batches(1, self.plan.latency_posts, f"l{concurrency}-")

            async def send(b: Batch) -> int:
                return (await client.write_async(b.txns, b.accounts)).written

            before = _commits(client)
            with self.profiler.record(f"latency-handle-c{concurrency}", client):
                m = asyncio.run(run_concurrent(posts, send, concurrency, 600.0, 1))
            self._latency("handle", concurrency, m, _commits(client) - before)
        self.retire(settings)

    def latency_http(self) -> None:
        settings, client = self.deploy("latency-http")
        for concurrency in LATENCY_CONCURRENCY:
            posts = self._requests(settings, 1, self.plan.latency_posts, f"l{concurrency}-")
            before = _commits(client)
            with self.profiler.record(f"latency-http-c{concurrency}", client):
                m = asyncio.run(self._post_all(settings, posts, 1, concurrency, 600.0))
            # The count includes the warm-up posts made before the measured ones.
            self._latency("http", concurrency, m, _commits(client) - before)

    def _latency(self, path: str, concurrency: int, m: Measured, commits: int) -> None:
        summary = m.summary(concurrency=concurrency, commits=commits)
        self.results["latency"][path][f"c{concurrency}"] = summary
        ack = summary["ack_ms"]
        self.log(
            f"latency {path:<6} {concurrency} in flight: p50 {ack['p50']:.1f} ms, "
            f"p99 {ack['p99']:.1f} ms ({m.writes} posts)"
        )

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        load_before = os.getloadavg()
        other_clusters = _raylets()
        if other_clusters:
            self.log(f"warning: {other_clusters} other Ray cluster(s) running; figures will suffer")
        os.environ["SCALE_DATA_ROOT"] = self.base.data_root
        self.log(f"data roots under {self.tmp}; plan {dataclasses.asdict(self.plan)}")
        try:
            ray.init(
                address="local",  # a cluster of our own, never one already running here
                num_cpus=2,
                num_gpus=1,
                include_dashboard=False,
                namespace="scale-bench",
                log_to_driver=False,
            )
            serve.start(http_options={"host": "127.0.0.1", "port": self.port})
            for batch in BATCH_SIZES:
                self.work.pool(batch)  # build the base tables before any timing
            self.breakdown()
            for batch in BATCH_SIZES:
                self.anchor(batch)
            for batch in BATCH_SIZES:
                self.handle(batch, concurrent=True)
                self.handle(batch, concurrent=False)
            for batch in BATCH_SIZES:
                self.http(batch)
            self.latency_handle()
            self.latency_http()
        finally:
            with contextlib.suppress(Exception):
                serve.shutdown()
            with contextlib.suppress(Exception):
                ray.shutdown()
            shutil.rmtree(self.tmp, ignore_errors=True)
        report = {
            "benchmark": "ingest",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": self.quick,
            "duration_s": round(time.perf_counter() - started, 1),
            "machine": machine()
            | {
                "loadavg_start": load_before,
                "loadavg_end": os.getloadavg(),
                "other_ray_clusters_at_start": other_clusters,
            },
            "versions": versions(),
            "config": {
                "users": USERS,
                "batch_sizes": list(BATCH_SIZES),
                "plan": dataclasses.asdict(self.plan),
                "handle_concurrency": HANDLE_CONCURRENCY,
                "http_concurrency": HTTP_CONCURRENCY,
                "latency_concurrency": list(LATENCY_CONCURRENCY),
                "settings": {
                    k: v
                    for k, v in dataclasses.asdict(self.base).items()
                    if k not in _UNREPORTED_SETTINGS
                },
                "table_configuration": TABLE_CONFIGURATION,
            },
            **self.results,
            "targets": targets(self.results),
        }
        if self.profiler.summaries:
            report["profile"] = self.profiler.summaries
        return report


#: Settings left out of the report: secrets, and paths that only name this run's temp dirs.
_UNREPORTED_SETTINGS = {"auth_secret", "data_root", "ray_namespace", "shared_data"}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    handle = [
        (mode, batch, r["rows_per_s"])
        for mode in ("handle_async", "handle_sync")
        for batch, r in results[mode].items()
    ]
    if handle:
        mode, batch, best = max(handle, key=lambda t: t[2])
        out.append(
            {
                "name": "durable rows/s through the handle (best batch size)",
                "target": f">= {TARGET_DURABLE_ROWS_S:,}",
                "measured": best,
                "where": f"{mode}, batch {batch}",
                "pass": best >= TARGET_DURABLE_ROWS_S,
            }
        )
    # Both ways of driving the handle are judged: several batches in flight (how the gateway
    # calls it; it can overlap two shards and share commits, which the sequential raw write
    # cannot) and one batch at a time (like for like with the raw write).
    big = str(BATCH_SIZES[-1])
    for mode, how in (("handle_async", f"{HANDLE_CONCURRENCY} in flight"), ("handle_sync", "1")):
        ratio = results[mode].get(big, {}).get("ratio_to_anchor")
        if ratio is None:
            continue
        out.append(
            {
                "name": f"handle ({how} at a time) / raw Delta write, {int(big):,}-row batches",
                "target": f">= {TARGET_LARGE_BATCH_RATIO:g}",
                "measured": ratio,
                "where": f"{mode} batch {big}",
                "pass": ratio >= TARGET_LARGE_BATCH_RATIO,
            }
        )
    for path, by_c in results["latency"].items():
        for key, r in by_c.items():
            p99 = r["ack_ms"]["p99"]
            out.append(
                {
                    "name": f"p99 single-post ack, {path}, {key[1:]} in flight",
                    "target": f"<= {TARGET_P99_MS:g} ms",
                    "measured": p99,
                    "where": f"{path} {key}",
                    "pass": p99 <= TARGET_P99_MS,
                }
            )
    return out


# -- environment -----------------------------------------------------------------------------
@contextlib.contextmanager
def _one_benchmark_at_a_time() -> Iterator[None]:
    """Hold a machine-wide lock while running: two benchmarks at once spoil both."""
    path = Path(tempfile.gettempdir()) / "scale-bench.lock"
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another benchmark run to finish ...", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    fs = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        fs = subprocess.run(
            ["df", "--output=fstype", tempfile.gettempdir()],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()[-1]
    return {
        "nproc": os.cpu_count(),
        "nproc_available": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 2**20, 1),
        "tmp_filesystem": fs,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, Any]:
    rev, changed = "", []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO)]
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        # Uncommitted changes to the code under test (the benchmark's own files aside).
        changed = [line[3:] for line in status if not line[3:].startswith("benchmarks/")]
    return {
        "ray": ray.__version__,
        "deltalake": deltalake.__version__,
        "pyarrow": pa.__version__,
        "httpx": httpx.__version__,
        "numpy": np.__version__,
        "scale_ray_git": rev + ("+dirty" if changed else ""),
        "uncommitted_files": changed,
    }


# -- output ----------------------------------------------------------------------------------
def render(report: dict[str, Any]) -> str:
    def rate(r: dict[str, Any] | None) -> str:
        if not r:
            return "-"
        ratio = r.get("ratio_to_anchor")
        return f"{r['rows_per_s']:>10,.0f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")

    m = report["machine"]
    lines = [
        f"ingest benchmark {report['date']} ({'quick' if report['quick'] else 'full'}, "
        f"{report['duration_s']} s) on {m['nproc']} x {m['cpu_model']}, {m['ram_gib']} GiB",
        "",
        "durable rows/s (ratio to the raw Delta write of the same batch size)",
        f"{'batch':>7} | {'raw delta':>10} | {'handle async':>19} | {'handle sync':>19} | "
        f"{'http':>19}",
    ]
    for batch in BATCH_SIZES:
        b = str(batch)
        lines.append(
            f"{batch:>7,} | {rate(report['anchor'].get(b)):>10} | "
            f"{rate(report['handle_async'].get(b)):>19} | "
            f"{rate(report['handle_sync'].get(b)):>19} | {rate(report['http'].get(b)):>19}"
        )
    lines += ["", "single-transaction ack latency (ms)"]
    lines.append(f"{'path':>7} | {'in flight':>9} | {'posts':>5} | {'p50':>6} | {'p99':>6} | max")
    for path, by_c in report["latency"].items():
        for key, r in by_c.items():
            a = r["ack_ms"]
            lines.append(
                f"{path:>7} | {key[1:]:>9} | {r['writes']:>5} | {a['p50']:>6.1f} | "
                f"{a['p99']:>6.1f} | {a['max']:.1f}"
            )
    bd = report.get("breakdown") or {}
    if bd:
        core, gw = bd["writer_core_ms_per_10k_write"], bd["gateway_ms_per_10k_rows"]
        drift = bd["one_row_commit_ms_by_version"]
        lines += [
            "",
            "where the time goes (in-process, no Ray)",
            f"  writer core, one 10,000-row write: {core['total']} ms = Delta append "
            f"{core['delta_append']} ms + dedup/casts {core['dedup_and_rest']} ms",
            f"  gateway, one 10,000-row body: json {gw['json_decode']} ms, validate "
            f"{gw['validate']} ms, Arrow build {gw['arrow_build']} ms",
            f"  one-row commit ms per {drift['commits_per_block']} versions: DeltaAppender "
            f"(open table) {drift['delta_appender_open_table']}, write_deltalake(uri) "
            f"{drift['write_deltalake_uri']}",
        ]
    lines += ["", "targets"]
    for t in report["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        lines.append(f"  {verdict}  {t['name']}: {t['measured']:,} (target {t['target']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (well under 2 min)")
    parser.add_argument("--rows", type=int, help="rows per throughput measurement, at most")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "ingest.json"))
    parser.add_argument("--profile", help="folder for py-spy profiles of actors and gateway")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    # A timeout's SIGTERM unwinds like Ctrl-C, so Serve, Ray and the temp dirs are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with _one_benchmark_at_a_time():
        report = Bench(args).run()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    print(render(report))
    print(f"\nreport written to {out}")
    missed = [t["name"] for t in report["targets"] if not t["pass"]]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
