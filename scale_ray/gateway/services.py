"""What the HTTP handlers need, built once per gateway replica."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from scale_ray.analytics.params import today_utc
from scale_ray.auth import TokenVerifier
from scale_ray.imports import ImportJournal, start_import
from scale_ray.ledger.delta import ensure_tables
from scale_ray.ledger.reader import LedgerReader
from scale_ray.settings import Settings


class BoundedSet:
    """A set that forgets its least recently added members beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def add(self, item: Hashable) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


@dataclass
class Services:
    settings: Settings
    verifier: TokenVerifier
    reader: LedgerReader
    writer: Any  # LedgerWriterClient (needs Ray)
    journal: ImportJournal
    launch_import: Any = start_import
    #: ``call(method, user_id, *args)`` on the Analytics deployment (or in process).
    analytics: Any = None
    #: ``categorize``, ``remember``, ``forget`` on the Categorizer deployment (None: none).
    categorizer: Any = None
    #: The AnomalyScorer deployment's handle (``score(user_id, txn_ids)``), or None.
    anomaly: Any = None
    #: ``ForecasterClient`` over the Forecaster deployment's handle, or None (503).
    forecaster: Any = None
    #: Server-Sent Events fan-out of notifications (created lazily, one per replica).
    hub: Any = None
    #: "Today" for date defaults (a function, so tests can pin it).
    clock: Callable[[], date] = today_utc
    #: (user_id, account_id) pairs this replica saw committed; bounded, only an optimization.
    known_accounts: BoundedSet = field(default_factory=lambda: BoundedSet(200_000))

    @classmethod
    def create(
        cls,
        settings: Settings,
        analytics_handle: Any = None,
        categorizer_handle: Any = None,
        anomaly_handle: Any = None,
        forecaster_handle: Any = None,
    ) -> Services:
        """Services of one gateway replica; without a handle, analytics run in process (and
        without a categorizer handle, ``/v1/categorize`` answers 503)."""
        from scale_ray.gateway.analytics_client import AnalyticsClient, LocalAnalyticsClient
        from scale_ray.gateway.categorize_routes import CategorizerClient
        from scale_ray.gateway.forecast_routes import ForecasterClient
        from scale_ray.ledger.writer_client import LedgerWriterClient

        ensure_tables(settings)
        if analytics_handle is not None:
            analytics: Any = AnalyticsClient(analytics_handle)
        else:
            from scale_ray.analytics.service import AnalyticsService

            analytics = LocalAnalyticsClient(AnalyticsService(settings))
        from scale_ray.gateway.notification_stream import NotificationHub

        return cls(
            settings=settings,
            verifier=TokenVerifier(settings),
            reader=LedgerReader(settings),
            writer=LedgerWriterClient(settings),
            journal=ImportJournal(settings),
            analytics=analytics,
            categorizer=CategorizerClient(categorizer_handle) if categorizer_handle else None,
            anomaly=anomaly_handle,
            forecaster=ForecasterClient(forecaster_handle) if forecaster_handle else None,
            # Streams end before Serve's 120 s request timeout; clients resume by Last-Event-ID.
            hub=NotificationHub(settings, max_stream_s=100),
        )
