"""What the HTTP handlers need, built once per gateway replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scale_ray.auth import TokenVerifier
from scale_ray.imports import ImportJournal, start_import
from scale_ray.ledger.delta import ensure_tables
from scale_ray.ledger.reader import LedgerReader
from scale_ray.settings import Settings


@dataclass
class Services:
    settings: Settings
    verifier: TokenVerifier
    reader: LedgerReader
    writer: Any  # LedgerWriterClient (needs Ray)
    journal: ImportJournal
    launch_import: Any = start_import

    @classmethod
    def create(cls, settings: Settings) -> Services:
        from scale_ray.ledger.writer_client import LedgerWriterClient

        ensure_tables(settings)
        return cls(
            settings=settings,
            verifier=TokenVerifier(settings),
            reader=LedgerReader(settings),
            writer=LedgerWriterClient(settings),
            journal=ImportJournal(settings),
        )
