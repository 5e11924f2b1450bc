"""Where the shipped categorizer's training rows come from, and how a first model gets made.

The categorizer must answer in SCALE's own taxonomy (``scale_ray.taxonomy``), but no public
data set is labelled in it, so the rows are assembled from three places:

* **scheme descriptions**: ISO 18245 merchant category codes and Plaid's categories, mapped
  onto our paths (:func:`taxonomy_examples`): they name what each class is about;
* **real merchant strings**: every distinct Birmingham purchase-card merchant that the demo
  generator buckets as personal spending, labelled through its bucket's path
  (``HINT_PATHS``): what bank feeds actually print;
* **users' labels**: every current correction (joined to its transaction's merchant) and every
  rule pattern in the ledger (:func:`user_label_rows`). A user's label applies at once through
  the categorizer's user memory; it becomes training signal for the *next* version here.

A small built-in list of everyday consumer merchants (salary, rent, streaming, ...: things a
council's purchase cards never buy) is always added, and is all there is on a fresh clone
without the shared data, so ``make run`` still gets a working model.

:func:`ensure_categorizer` trains and publishes a first version when the registry has none,
under a file lock so that replicas starting together train it once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_ray.demo.merchants import FALLBACK_MERCHANTS, MerchantRecord, load_merchant_catalog
from scale_ray.models.hypcd.categorizer import HypCDCategorizer, fit_categorizer
from scale_ray.models.hypcd.taxonomy_map import taxonomy_examples
from scale_ray.models.hypcd.train import TrainConfig
from scale_ray.models.registry import ModelRegistry, new_version
from scale_ray.settings import Settings
from scale_ray.taxonomy import HINT_PATHS, UNCATEGORIZED, CategoryError, normalize_path

log = logging.getLogger(__name__)

MODEL_NAME = "categorizer"
#: The shipped model's training schedule. One torch thread: on 2 shared CPUs, two threads
#: contending with other processes made an epoch 20x slower (60 s against 2.5 s), while on
#: idle cores the second thread gains little on these small matrices.
DEFAULT_CONFIG = TrainConfig(epochs=40, threads=1)
#: Real merchants kept per path, most frequent first: the council's cards are mostly supplies
#: ("Shopping/General" would otherwise be half the rows and half the training time).
MAX_MERCHANTS_PER_PATH = 600

#: Demo buckets HINT_PATHS does not know (it maps statement hints, which have no "hotel").
_BUCKET_PATHS: dict[str, str] = {"hotel": "Travel/Lodging"}
#: Finer paths inside coarse buckets, by the council's category or by a word in the name.
_FINER_BY_CATEGORY: dict[str, dict[str, str]] = {
    "Transport/Public transport": {
        "Travel Taxis": "Transport/Taxi",
        "Car Parking": "Transport/Parking",
    },
    "Bills/Utilities": {
        "Electricity": "Bills/Utilities/Energy",
        "Gas": "Bills/Utilities/Energy",
        "Water Services": "Bills/Utilities/Water",
    },
}
_FINER_BY_WORD: dict[str, tuple[tuple[str, str], ...]] = {
    "Transport/Public transport": (
        ("taxi", "Transport/Taxi"),
        ("uber", "Transport/Taxi"),
        ("cabs", "Transport/Taxi"),
        ("parking", "Transport/Parking"),
        ("ncp", "Transport/Parking"),
        ("ringgo", "Transport/Parking"),
        ("park mobile", "Transport/Parking"),
    ),
    "Bills/Utilities": (
        ("water", "Bills/Utilities/Water"),
        ("energy", "Bills/Utilities/Energy"),
        ("gas", "Bills/Utilities/Energy"),
        ("electric", "Bills/Utilities/Energy"),
        ("power", "Bills/Utilities/Energy"),
        ("e.on", "Bills/Utilities/Energy"),
        ("broadband", "Bills/Utilities/Broadband"),
    ),
    "Food & drink/Eating out": (
        ("costa", "Food & drink/Coffee"),
        ("starbucks", "Food & drink/Coffee"),
        ("caffe nero", "Food & drink/Coffee"),
        ("coffee", "Food & drink/Coffee"),
        ("pret a manger", "Food & drink/Coffee"),
    ),
}

#: Everyday consumer merchants the public sources lack (written as card feeds print them).
BUILTIN_ROWS: tuple[tuple[str, str], ...] = (
    ("ACME LTD SALARY", "Income/Salary"),
    ("PAYROLL GLOBEX PLC", "Income/Salary"),
    ("HMRC TAX CREDITS", "Income/Benefits & pensions"),
    ("DWP STATE PENSION", "Income/Benefits & pensions"),
    ("INTEREST PAID", "Income/Interest"),
    ("REFUND AMAZON", "Income/Refunds"),
    ("HOMELY LETTINGS RENT", "Housing/Rent"),
    ("FOXTONS RENT", "Housing/Rent"),
    ("NATIONWIDE MORTGAGE", "Housing/Mortgage"),
    ("HALIFAX MORTGAGE DD", "Housing/Mortgage"),
    ("BIRMINGHAM CITY COUNCIL CTAX", "Housing/Council tax"),
    ("COUNCIL TAX LBH", "Housing/Council tax"),
    ("B&Q", "Housing/Home improvement"),
    ("WICKES", "Housing/Home improvement"),
    ("OCTOPUS ENERGY", "Bills/Utilities/Energy"),
    ("EDF ENERGY DD", "Bills/Utilities/Energy"),
    ("SEVERN TRENT WATER", "Bills/Utilities/Water"),
    ("THAMES WATER", "Bills/Utilities/Water"),
    ("BT BROADBAND", "Bills/Utilities/Broadband"),
    ("VIRGIN MEDIA", "Bills/Utilities/Broadband"),
    ("AVIVA INSURANCE", "Bills/Insurance"),
    ("DIRECT LINE INSURANCE", "Bills/Insurance"),
    ("DISNEY PLUS", "Bills/Subscriptions"),
    ("APPLE.COM/BILL", "Bills/Subscriptions"),
    ("NOW TV", "Bills/Subscriptions"),
    ("AUDIBLE UK", "Bills/Subscriptions"),
    ("COFFEE#1", "Food & drink/Coffee"),
    ("BLACK SHEEP COFFEE", "Food & drink/Coffee"),
    ("DELIVEROO", "Food & drink/Eating out"),
    ("UBER TRIP", "Transport/Taxi"),
    ("ADDISON LEE", "Transport/Taxi"),
    ("NCP CAR PARK", "Transport/Parking"),
    ("RINGGO PARKING", "Transport/Parking"),
    ("DVLA VEHICLE TAX", "Transport/Vehicle"),
    ("KWIK FIT", "Transport/Vehicle"),
    ("HALFORDS", "Transport/Vehicle"),
    ("CURRYS PC WORLD", "Shopping/Electronics"),
    ("APPLE STORE", "Shopping/Electronics"),
    ("H&M", "Shopping/Clothing"),
    ("ZARA", "Shopping/Clothing"),
    ("IKEA", "Shopping/Household"),
    ("DUNELM", "Shopping/Household"),
    ("PUREGYM", "Leisure/Sport & fitness"),
    ("THE GYM GROUP", "Leisure/Sport & fitness"),
    ("HOBBYCRAFT", "Leisure/Hobbies"),
    ("STEAM GAMES", "Leisure/Hobbies"),
    ("BOOTS PHARMACY", "Health & care/Pharmacy"),
    ("LLOYDS PHARMACY", "Health & care/Pharmacy"),
    ("BUPA DENTAL", "Health & care/Medical"),
    ("SPECSAVERS", "Health & care/Medical"),
    ("TONI&GUY", "Health & care/Personal care"),
    ("CASH WITHDRAWAL", "Cash/ATM withdrawals"),
    ("ATM LINK", "Cash/ATM withdrawals"),
    ("OVERDRAFT FEE", "Financial/Fees"),
    ("ZOPA LOAN", "Financial/Loan payments"),
    ("HMRC SELF ASSESSMENT", "Financial/Taxes"),
    ("OXFAM", "Financial/Charity"),
    ("BRITISH HEART FOUNDATION", "Financial/Charity"),
    ("TRANSFER TO SAVINGS", "Transfers/Savings"),
    ("BARCLAYCARD PAYMENT", "Transfers/Credit card payment"),
    ("TRANSFER TO OWN ACCOUNT", "Transfers/Between accounts"),
)


@dataclass
class TrainingRows:
    """Parallel texts and taxonomy paths, with how many rows each source gave."""

    texts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, pairs: list[tuple[str, str]]) -> None:
        for text, path in pairs:
            self.texts.append(text)
            self.paths.append(path)
        self.sources[source] = self.sources.get(source, 0) + len(pairs)

    def __len__(self) -> int:
        return len(self.texts)


def bucket_path(bucket: str) -> str | None:
    """The taxonomy path of a demo merchant bucket; ``None`` for ``"other"`` (not spending)."""
    if bucket == "other":
        return None
    return _BUCKET_PATHS.get(bucket) or HINT_PATHS.get(bucket)


def refine_path(path: str, name: str, category: str = "") -> str:
    """A finer path inside a coarse bucket's (taxi and parking in transport, energy and water
    in utilities, coffee shops in eating out), from a word in the merchant's name or else the
    council's category."""
    lowered = name.lower()
    for word, finer in _FINER_BY_WORD.get(path, ()):
        if word in lowered:
            return finer
    return _FINER_BY_CATEGORY.get(path, {}).get(category.strip(), path)


def merchant_path(record: MerchantRecord) -> str | None:
    """A catalog merchant's path: its bucket's, refined (``None`` for non-spending)."""
    path = bucket_path(record.bucket)
    return None if path is None else refine_path(path, record.name, record.category)


def fallback_rows() -> list[tuple[str, str]]:
    """The built-in rows: the demo's fallback merchants by bucket, plus :data:`BUILTIN_ROWS`."""
    pairs = [
        (name, refine_path(path, name))
        for bucket, names in FALLBACK_MERCHANTS.items()
        if (path := bucket_path(bucket)) is not None
        for name in names
    ]
    pairs.extend(BUILTIN_ROWS)
    return list(dict.fromkeys(pairs))


def user_label_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """``(user_id, text, path)`` of every current correction and rule in the ledger.

    A correction's text is its transaction's merchant (the narration when there is none); a
    rule's text is its pattern. Labels that are not well-formed paths, or say
    ``Uncategorized``, are left out. Empty when the ledger has no such tables yet.
    """
    from scale_ray.ledger.duck import open_ledger

    if settings.is_local and not Path(settings.path()).is_dir():
        return []
    con = open_ledger(settings.data_root)
    try:
        rows = con.execute(
            """
            SELECT c.user_id, min(coalesce(nullif(trim(t.merchant), ''), t.narration)),
                   c.category
            FROM corrections c
            JOIN transactions t
              ON t.user_bucket = c.user_bucket AND t.user_id = c.user_id AND t.txn_id = c.txn_id
            GROUP BY c.user_id, c.txn_id, c.category
            UNION ALL
            SELECT user_id, pattern, category FROM rules
            ORDER BY 1, 2, 3
            """
        ).fetchall()
    finally:
        con.close()
    out: list[tuple[str, str, str]] = []
    for user_id, text, category in rows:
        if not text or not category or not str(text).strip():
            continue
        try:
            path = normalize_path(category)
        except CategoryError:
            continue
        if path != UNCATEGORIZED:
            out.append((str(user_id), str(text).strip(), path))
    return out


def collect_training_rows(
    settings: Settings, max_per_path: int = MAX_MERCHANTS_PER_PATH
) -> TrainingRows:
    """Every default training row, with a per-source count (see the module docstring).

    Of the real merchants, at most ``max_per_path`` per path are kept, most frequent first.
    """
    rows = TrainingRows()
    shared = settings.shared_data_path()
    try:
        descriptions = taxonomy_examples(shared)
    except FileNotFoundError:
        log.warning("no taxonomy files under %s: training without scheme descriptions", shared)
        descriptions = []
    rows.add("taxonomy_descriptions", descriptions)
    try:
        catalog = load_merchant_catalog(shared)
    except FileNotFoundError:
        log.warning("no purchase-card data under %s: training on built-in merchants", shared)
        catalog = []
    per_path: Counter[str] = Counter()
    pairs: list[tuple[str, str]] = []
    for record in catalog:  # most frequent first
        path = merchant_path(record)
        if path is not None and per_path[path] < max_per_path:
            per_path[path] += 1
            pairs.append((record.name, path))
    rows.add("birmingham_merchants", pairs)
    rows.add("builtin_merchants", fallback_rows())
    rows.add("user_labels", [(text, path) for _, text, path in user_label_rows(settings)])
    return rows


def default_training_rows(settings: Settings) -> tuple[list[str], list[str]]:
    """``(texts, paths)`` the shipped categorizer is trained on (see the module docstring)."""
    rows = collect_training_rows(settings)
    return rows.texts, rows.paths


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (0: leave as is), then restore."""
    import torch

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_and_publish(
    settings: Settings,
    config: TrainConfig | None = None,
    rows: tuple[list[str], list[str]] | None = None,
    metadata: dict[str, Any] | None = None,
    registry: ModelRegistry | None = None,
    names: dict[str, str] | None = None,
) -> str:
    """Fit a categorizer on ``rows`` (default: :func:`collect_training_rows`) and publish it
    as a new ``categorizer`` version (not promoted). Returns the version. ``names`` maps a
    path to a display name (for label codes such as Birmingham's ``K/K020``).

    With :data:`DEFAULT_CONFIG` and the default rows (3,621 rows, 3,179 merchants, 46 paths;
    3 text views each) this took 113 s on the shared 2-CPU dev machine at load average 6, or
    84 s of CPU on one thread, split between MiniLM encoding and the 40 epochs.
    """
    config = config or DEFAULT_CONFIG
    registry = registry or ModelRegistry.from_settings(settings)
    extra: dict[str, Any] = {}
    if rows is None:
        collected = collect_training_rows(settings)
        texts, paths = collected.texts, collected.paths
        extra["sources"] = dict(collected.sources)
        extra.setdefault("data_source", "default")
    else:
        texts, paths = list(rows[0]), list(rows[1])
    started = time.perf_counter()
    with torch_threads(config.threads):
        model = fit_categorizer(texts, paths, config, names=names)
    seconds = time.perf_counter() - started
    info: dict[str, Any] = {
        **extra,
        "rows": len(texts),
        "merchants": len(model.memory_keys),
        "classes": len(model.classes),
        "class_rows": dict(sorted(Counter(paths).items())),
        "config": config.to_json(),
        "inference": dict(model.inference.__dict__),
        "metrics": dict(model.metrics),
        "hierarchy": model.hierarchy_report(),
        "train_seconds": round(seconds, 2),
        **(metadata or {}),
    }
    return publish_model(registry, model, info)


def publish_model(
    registry: ModelRegistry, model: HypCDCategorizer, metadata: dict[str, Any]
) -> str:
    """Save ``model`` as a new ``categorizer`` version; its files record the same version."""
    for _ in range(10):
        version = new_version()
        model.version = version
        try:
            return registry.publish(MODEL_NAME, model.save, metadata, version=version)
        except FileExistsError:  # another process published in the same microsecond
            continue
    raise RuntimeError("could not publish the categorizer: version names kept clashing")


def ensure_categorizer(
    settings: Settings,
    registry: ModelRegistry | None = None,
    *,
    config: TrainConfig | None = None,
    rows: tuple[list[str], list[str]] | None = None,
) -> str:
    """The live categorizer version, training and publishing a first one if there is none
    (with ``config`` and ``rows``, defaults as in :func:`train_and_publish`).

    Safe when several processes call it at once: one trains (holding an ``flock`` on
    ``<root>/categorizer/.lock``), the others wait and then return its version.
    """
    registry = registry or ModelRegistry.from_settings(settings)

    def publish_first() -> str:
        log.info("no categorizer under %s: training the first version", registry.root)
        chosen = rows
        if chosen is None and settings.categorizer_bootstrap == "builtin":
            pairs = fallback_rows()
            chosen = ([t for t, _ in pairs], [p for _, p in pairs])
        elif settings.categorizer_bootstrap not in ("default", "builtin"):
            raise ValueError(
                "SCALE_CATEGORIZER_BOOTSTRAP must be 'default' or 'builtin', "
                f"not {settings.categorizer_bootstrap!r}"
            )
        return train_and_publish(settings, config, chosen, registry=registry)

    return registry.ensure_live(MODEL_NAME, publish_first)
