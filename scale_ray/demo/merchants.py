"""Real merchant strings for demo tenants, read from the Birmingham purchase-card files.

The files under ``birmingham_pcard_2016_2017/`` are real card transactions, so their
``MERCHANT NAME`` values look exactly like what a bank feed shows (``"tesco stores 5504"``,
``"shell kings 587"``). Each name carries the council's expense category (``TRANS CAC DESC 1``);
:func:`merchant_bucket` maps that category, plus keywords in the name, onto the handful of
personal-spending buckets the demo generator draws from.

The files differ in small ways: ten use ``;`` and two use ``,`` as separator, one header has
``"; "`` with spaces, and four are not valid UTF-8 (Windows-1252 dashes), so each file is decoded
as UTF-8 first and as Latin-1 when that fails.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PCARD_DIR = "birmingham_pcard_2016_2017"

#: Spending buckets the generator understands. ``other`` is never drawn for personal spend.
BUCKETS: tuple[str, ...] = (
    "groceries",
    "fuel",
    "eating_out",
    "shopping",
    "transport",
    "entertainment",
    "hotel",
    "travel",
    "utilities",
    "phone",
    "subscriptions",
    "other",
)

# Council expense categories (TRANS CAC DESC 1) -> personal-spending bucket.
_CATEGORY_BUCKET: dict[str, str] = {
    "Vehicle Fuel": "fuel",
    "Purchases Food": "groceries",
    "Hospitality": "eating_out",
    "Contract Meals": "eating_out",
    "Travel Bus/Rail": "transport",
    "Travel Taxis": "transport",
    "Car Parking": "transport",
    "Transport Misc": "transport",
    "Travel Foreign": "travel",
    "Ttavel Other (UK)": "travel",
    "Conference Fees Subs Foreign": "travel",
    "Electricity": "utilities",
    "Gas": "utilities",
    "Water Services": "utilities",
    "Phon NonCentrx Lines": "phone",
    "Mobiles/Radios/Pagrs": "phone",
    "Subscriptions": "subscriptions",
    "N'Papers&Periodicals": "subscriptions",
    "Visits Expenditure": "entertainment",
    "Personal Needs": "shopping",
    "Clothing&Uniforms": "shopping",
    "Books": "shopping",
    "Equip Operational": "shopping",
    "Equip Other": "shopping",
    "Equip Office": "shopping",
    "Computing Other": "shopping",
    "Stationery": "shopping",
    "Cleaning Materials": "shopping",
    "Other Fix&Fittings": "shopping",
    "Supplies & Sev Mic": "shopping",
    "Floral Decorations": "shopping",
}

# Name keywords win over the category: a hotel booked under "Hospitality" is a hotel, a
# McDonald's booked under "Purchases Food" is eating out. Checked in this order.
_KEYWORD_BUCKET: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "hotel",
        (
            "travelodge",
            "premier inn",
            "hilton",
            "marriott",
            "holiday inn",
            "hotel",
            "crowne plaza",
            "mercure",
            "ibis ",
            "jurys inn",
            "novotel",
            "radisson",
            "airbnb",
            "booking.com",
        ),
    ),
    (
        "eating_out",
        (
            "mcdonalds",
            "costa",
            "starbucks",
            "greggs",
            "pret a manger",
            "caffe nero",
            "subway",
            "kfc",
            "pizza",
            "dominos",
            "just-eat",
            "nandos",
            "burger",
            "restaurant",
            "resta",
            "cafe",
            "coffee",
            "wetherspoon",
            "brewers fayre",
            "prezzo",
            "wagamama",
            "deliveroo",
        ),
    ),
    (
        "fuel",
        (
            "pfs ",
            "petro",
            "pay at pump",
            "shell ",
            "esso ",
            "texaco",
            "bp ",
            "f/stn",
            "s/stn",
        ),
    ),
    (
        "groceries",
        (
            "tesco store",
            "tesco-store",
            "sainsbury",
            "asda",
            "aldi",
            "lidl",
            "morrison",
            "iceland",
            "co-op",
            "waitrose",
            "farmfoods",
            "ms simply food",
            "one stop",
            "spar",
        ),
    ),
    (
        "travel",
        ("ryanair", "easyjet", "flybe", "jet2", "british a", "lufthansa", "klm", "expedia"),
    ),
    (
        "transport",
        (
            "trainline",
            "trains",
            "uber ",
            "taxi",
            "ncp",
            "parking",
            "park mobile",
            "ringgo",
            "oyster",
            "tfl ",
        ),
    ),
    (
        "utilities",
        (
            "npower",
            "british gas",
            "britishgas",
            "e.on",
            "edf energy",
            "scottish power",
            "stwater",
            " water ",
        ),
    ),
    ("phone", ("vodafone", "o2 uk", "giffgaff", "ee  t-mobile", "bt bill payment", "virgin media")),
    (
        "subscriptions",
        (
            "netflix",
            "spotify",
            "amazon prime",
            "prime amzn",
            "tvlicensing",
            "itunes",
            "google google play",
        ),
    ),
    (
        "entertainment",
        ("cinema", "odeon", "cineworld", "vue bsl", "theatre", "bowl", "zoo", "safari"),
    ),
    (
        "shopping",
        ("amazon", "argos", "screwfix", "b  q ", "wickes", "ebay", "primark", "boots", "currys"),
    ),
)


@dataclass(frozen=True, slots=True)
class MerchantRecord:
    """One distinct real merchant string with its most frequent council category.

    ``count`` is how many card transactions in the source carry the name; the generator uses
    the resulting rank as a popularity prior (big chains first).
    """

    name: str
    category: str
    category_code: str
    count: int

    @property
    def bucket(self) -> str:
        return merchant_bucket(self.name, self.category)


def merchant_bucket(name: str, category: str | None = None) -> str:
    """Personal-spending bucket for a merchant string (one of :data:`BUCKETS`).

    Keywords in the name decide first; otherwise the council category, when known; otherwise
    ``"shopping"`` for names without a category (a plain list of names) and ``"other"`` for
    categories that are not personal spend (building repairs, legal fees, ...).
    """
    lowered = f" {name.lower()} "
    for bucket, keywords in _KEYWORD_BUCKET:
        if any(k in lowered for k in keywords):
            return bucket
    if category is None:
        return "shopping"
    return _CATEGORY_BUCKET.get(category.strip(), "other")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_pcard_file(path: Path) -> list[tuple[str, str, str]]:
    """(merchant name, CAC code 1, CAC description 1) for every row with a merchant name."""
    text = _decode(path.read_bytes()).lstrip("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") >= first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    header = next(reader, None)
    if header is None:
        return []
    columns = {name.strip().upper(): i for i, name in enumerate(header)}
    try:
        i_name = columns["MERCHANT NAME"]
    except KeyError:
        return []
    i_code = columns.get("TRANS CAC CODE 1")
    i_desc = columns.get("TRANS CAC DESC 1")
    out: list[tuple[str, str, str]] = []
    for row in reader:
        if len(row) <= i_name:
            continue
        name = row[i_name].strip()
        if not name:
            continue
        code = row[i_code].strip() if i_code is not None and i_code < len(row) else ""
        desc = row[i_desc].strip() if i_desc is not None and i_desc < len(row) else ""
        out.append((name, code, desc))
    return out


@lru_cache(maxsize=4)
def _catalog(folder: str) -> tuple[MerchantRecord, ...]:
    names: Counter[str] = Counter()
    categories: dict[str, Counter[tuple[str, str]]] = {}
    for path in sorted(Path(folder).glob("*.csv")):
        for name, code, desc in _read_pcard_file(path):
            names[name] += 1
            categories.setdefault(name, Counter())[(desc, code)] += 1
    records = []
    for name, count in names.items():
        # Most frequent category; ties broken by the category text so the result is stable.
        (desc, code), _ = min(categories[name].items(), key=lambda kv: (-kv[1], kv[0]))
        records.append(MerchantRecord(name=name, category=desc, category_code=code, count=count))
    records.sort(key=lambda r: (-r.count, r.name))
    return tuple(records)


def load_merchant_catalog(shared_data: Path) -> list[MerchantRecord]:
    """Every distinct real merchant name with its category, most frequent first.

    Order: descending transaction count, then name, so it is the same on every machine.
    Raises :class:`FileNotFoundError` when the purchase-card folder is missing.
    """
    folder = Path(shared_data) / PCARD_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found")
    return list(_catalog(str(folder.resolve())))


def load_merchant_names(shared_data: Path) -> list[str]:
    """The real distinct ``MERCHANT NAME`` strings, most frequent first (see the catalog)."""
    return [r.name for r in load_merchant_catalog(shared_data)]


#: Used when the shared data is absent or a bucket has no real names (streaming services are
#: rare on council purchase cards). Names are written the way card feeds show them.
FALLBACK_MERCHANTS: dict[str, tuple[str, ...]] = {
    "groceries": (
        "tesco stores 2335",
        "sainsburys s/mkts",
        "asda superstore",
        "aldi",
        "lidl uk",
        "w m morrisons",
        "co-op group",
        "iceland",
        "ms simply food",
        "waitrose",
    ),
    "fuel": ("shell kings 587", "esso aston way ss", "tesco pfs 4203", "bp kensington f/stn"),
    "eating_out": (
        "mcdonalds",
        "costa coffee",
        "greggs plc",
        "starbucks",
        "pret a manger",
        "nandos bullring",
        "www.just-eat.co.uk",
        "subway",
        "kfc",
        "pizza hut online web",
        "caffe nero",
        "wagamama",
    ),
    "shopping": (
        "amazon uk marketplace",
        "argos retail group",
        "boots the chemist",
        "primark 476",
        "next directory",
        "john lewis",
        "currys online",
        "ikea limited",
        "wh smith",
        "tk maxx",
        "matalan",
        "screwfix direct",
        "the range",
        "card factory",
        "sportsdirect.com",
    ),
    "transport": ("trainline", "west mid travel", "ncp limited", "ringgo", "uber trip help.uber"),
    "entertainment": ("odeon", "cineworld", "vue bsl ltd", "birmingham hippodrome"),
    "hotel": ("premier inn", "travelodge gb0000", "holiday inn"),
    "travel": ("ryanair", "easyjet", "british a", "expedia", "jet2.com"),
    "utilities": ("british gas", "octopus energy", "edf energy-dom", "severn trent water"),
    "phone": ("vodafone", "o2 uk payment", "ee  t-mobile", "giffgaff.com", "bt bill payment 1"),
    "subscriptions": ("netflix.com", "spotify p", "amazon prime", "tvlicensing.co.uk"),
    "other": (),
}
