"""Bulk statement imports: raw file kept, parsed in a Ray task, written through the writers.

``POST /v1/imports`` stores the upload and a ``queued`` job row, then starts
:func:`run_import` as a Ray task and answers ``202``. The task appends progress rows to the
``imports`` Delta table (latest ``seq`` wins), so progress survives any process.
Writes go through the LedgerWriters in chunks; each chunk is one atomic commit and
idempotent by (user_id, txn_id), so a rerun of a failed job never duplicates a row.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from scale_ray.ingest.records import ParseError
from scale_ray.ledger.delta import DeltaAppender, SnapshotCache
from scale_ray.ledger.rows import accounts_table, implied_accounts, transactions_table
from scale_ray.ledger.schema import IMPORTS
from scale_ray.settings import Settings

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
MAX_STORED_REJECTIONS = 1_000


@dataclass
class ImportOptions:
    """What the uploader told us about the file (all optional)."""

    format: str = "auto"
    account_id: str | None = None
    currency: str | None = None
    date_order: str | None = None
    mapping: dict[str, str] | None = None


@dataclass
class ImportStatus:
    job_id: str
    user_id: str
    status: str  # queued | running | completed | failed
    filename: str | None = None
    format: str | None = None
    rows_parsed: int = 0
    rows_written: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    updated_at: str | None = None
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("user_id")
        return out


def new_job_id() -> str:
    return "imp_" + uuid.uuid4().hex


def store_raw(settings: Settings, job_id: str, data: bytes) -> str:
    """Keep the uploaded bytes under ``<data root>/raw/imports/<job_id>``; returns its URI."""
    uri = settings.path("raw", "imports", job_id)
    fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else "file://" + uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data)
    return uri


def read_raw(uri: str) -> bytes:
    fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else "file://" + uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


class ImportJournal:
    """Appends and reads job progress rows in the ``imports`` table."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._appender: DeltaAppender | None = None
        self._snapshots = SnapshotCache(settings, "imports")
        self._lock = threading.Lock()

    def record(
        self,
        status: ImportStatus,
        *,
        raw_uri: str | None = None,
        options: ImportOptions | None = None,
    ) -> None:
        status.updated_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        row = {
            "job_id": status.job_id,
            "user_id": status.user_id,
            "seq": status.seq,
            "status": status.status,
            "filename": status.filename,
            "format": status.format,
            "raw_uri": raw_uri,
            "rows_parsed": status.rows_parsed,
            "rows_written": status.rows_written,
            "rows_duplicate": status.rows_duplicate,
            "rows_rejected": status.rows_rejected,
            "rejections_json": json.dumps(status.rejections[:MAX_STORED_REJECTIONS]),
            "error": status.error,
            "options_json": json.dumps(asdict(options)) if options else None,
            "updated_at": datetime.now(UTC),
        }
        with self._lock:
            if self._appender is None:
                self._appender = DeltaAppender(self.settings, "imports")
            self._appender.append(pa.Table.from_pylist([row], schema=IMPORTS))
        status.seq += 1

    def get(self, user_id: str, job_id: str) -> ImportStatus | None:
        """Latest state of ``job_id`` if it belongs to ``user_id`` (else ``None``)."""
        version = self._snapshots.latest_version()
        dataset = self._snapshots.dataset(version)
        table = dataset.to_table(
            filter=(pc.field("job_id") == job_id) & (pc.field("user_id") == user_id)
        )
        if table.num_rows == 0:
            return None
        latest = max(table.to_pylist(), key=lambda r: r["seq"])
        return ImportStatus(
            job_id=latest["job_id"],
            user_id=latest["user_id"],
            status=latest["status"],
            filename=latest["filename"],
            format=latest["format"],
            rows_parsed=latest["rows_parsed"],
            rows_written=latest["rows_written"],
            rows_duplicate=latest["rows_duplicate"],
            rows_rejected=latest["rows_rejected"],
            rejections=json.loads(latest["rejections_json"] or "[]"),
            error=latest["error"],
            updated_at=latest["updated_at"].isoformat().replace("+00:00", "Z"),
            seq=latest["seq"] + 1,
        )


def execute_import(
    settings: Settings,
    status: ImportStatus,
    raw_uri: str,
    options: ImportOptions,
    writer: Any,
    journal: ImportJournal,
) -> ImportStatus:
    """Parse the raw file and write it in chunks through ``writer`` (a LedgerWriterClient)."""
    from scale_ray.ingest.parse import ColumnMapping, parse_bytes

    status.status = "running"
    journal.record(status)
    try:
        data = read_raw(raw_uri)
        mapping = ColumnMapping.from_dict(options.mapping) if options.mapping else None
        result = parse_bytes(
            data,
            filename=status.filename or "",
            format=options.format,
            mapping=mapping,
            default_currency=options.currency,
            account_id=options.account_id,
            date_order=options.date_order,
        )
    except (ParseError, ValueError, OSError) as exc:
        status.status = "failed"
        status.error = str(exc)
        journal.record(status)
        return status
    status.format = result.format
    status.rows_parsed = len(result.rows)
    status.rows_rejected = len(result.rejections)
    status.rejections = [{"row": r.row_number, "reason": r.reason} for r in result.rejections]
    default_account = options.account_id or "default"
    accounts = list(result.accounts)
    known = {a.account_id for a in accounts}
    accounts += [
        a for a in implied_accounts(result.rows, default_account) if a.account_id not in known
    ]
    currency = options.currency or (result.rows[0].currency if result.rows else "GBP")
    acc_table = accounts_table(
        status.user_id,
        accounts,
        num_buckets=settings.num_buckets,
        source=f"import:{result.format}",
        default_currency=currency,
    )
    # Ids over the whole file at once: occurrence counting must see every row.
    txns = transactions_table(
        status.user_id,
        result.rows,
        num_buckets=settings.num_buckets,
        source=f"import:{result.format}",
        default_account_id=default_account,
        import_id=status.job_id,
    )
    try:
        for start in range(0, max(txns.num_rows, 1), CHUNK_ROWS):
            chunk = txns.slice(start, CHUNK_ROWS)
            ack = writer.write(chunk, acc_table if start == 0 else None)
            status.rows_written += ack.written
            status.rows_duplicate += ack.duplicates
            journal.record(status)
    except Exception as exc:  # surfaced to the user; the rerun is idempotent
        log.exception("import %s failed while writing", status.job_id)
        status.status = "failed"
        status.error = f"writing failed after {status.rows_written} rows: {exc}"
        journal.record(status)
        return status
    status.status = "completed"
    journal.record(status)
    return status


def run_import_task(
    settings_env: dict[str, str], status_json: dict[str, Any], raw_uri: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Ray task entry point (see :func:`start_import`)."""
    from scale_ray.ledger.writer_client import LedgerWriterClient

    settings = Settings.from_env(settings_env)
    status = ImportStatus(**status_json)
    final = execute_import(
        settings,
        status,
        raw_uri,
        ImportOptions(**options),
        LedgerWriterClient(settings),
        ImportJournal(settings),
    )
    return final.to_json()


def start_import(
    settings: Settings, status: ImportStatus, raw_uri: str, options: ImportOptions
) -> Any:
    """Launch the import as a Ray task; returns its ObjectRef."""
    import ray

    task = ray.remote(num_cpus=0.5, max_retries=2, retry_exceptions=False)(run_import_task)
    return task.remote(settings.as_env(), asdict(status), raw_uri, asdict(options))
