"""MCC and Plaid categories land on valid SCALE taxonomy paths; the seed pairs are usable."""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from pathlib import Path

import pytest

from scale_ray.models.hypcd.taxonomy_map import (
    MCC_OVERRIDES,
    MCC_RANGES,
    PLAID_DETAILED,
    PLAID_PRIMARY,
    mcc_path,
    mcc_range,
    plaid_path,
    taxonomy_examples,
)
from scale_ray.settings import get_settings
from scale_ray.taxonomy import UNCATEGORIZED, all_paths, normalize_path

SHARED = get_settings().shared_data_path()
TAXONOMIES = SHARED / "taxonomies"
SHIPPED = set(all_paths())


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.mark.parametrize(
    ("mcc", "path"),
    [
        (5411, "Food & drink/Groceries"),
        ("5812", "Food & drink/Eating out"),
        (5814, "Food & drink/Eating out"),
        (5541, "Transport/Fuel"),
        (5542, "Transport/Fuel"),
        (4111, "Transport/Public transport"),
        (4131, "Transport/Public transport"),
        (4121, "Transport/Taxi"),
        (7523, "Transport/Parking"),
        (5912, "Health & care/Pharmacy"),
        (4814, "Bills/Phone"),
        (4900, "Bills/Utilities"),
        (3000, "Travel/Flights"),
        (3299, "Travel/Flights"),
        (4511, "Travel/Flights"),
        (3357, "Travel/Trips"),  # Hertz: car rental block
        (3501, "Travel/Lodging"),
        (3999, "Travel/Lodging"),
        (7011, "Travel/Lodging"),
        (6011, "Cash/ATM withdrawals"),
        (5311, "Shopping/General"),
        (5399, "Shopping/General"),
        (5651, "Shopping/Clothing"),
        (5691, "Shopping/Clothing"),
        (5732, "Shopping/Electronics"),
        (7832, "Leisure/Entertainment"),
        (7997, "Leisure/Sport & fitness"),
        (8011, "Health & care/Medical"),
        (8062, "Health & care/Medical"),
        (6300, "Bills/Insurance"),
        (8398, "Financial/Charity"),
        (9311, "Financial/Taxes"),
        # Range fallbacks for codes with no override.
        (5699, "Shopping/Clothing"),
        (1799, "Housing/Home improvement"),
        (7999, "Leisure/Entertainment"),
        (9250, "Financial/Taxes"),
        (5999, "Shopping/General"),
        (" 0742 ", "Health & care/Medical"),
        # Unknown.
        (500, UNCATEGORIZED),
        (9100, UNCATEGORIZED),
        (10000, UNCATEGORIZED),
        (-1, UNCATEGORIZED),
        ("abc", UNCATEGORIZED),
        ("", UNCATEGORIZED),
    ],
)
def test_mcc_path(mcc: int | str, path: str) -> None:
    assert mcc_path(mcc) == path


def test_every_mcc_path_is_a_shipped_path() -> None:
    paths = {mcc_path(code) for code in range(10_000)} | set(MCC_OVERRIDES.values())
    assert paths <= SHIPPED
    assert all(normalize_path(p) == p for p in paths)
    assert len(paths) > 30


def test_range_constants_match_the_published_table() -> None:
    table = _need(TAXONOMIES / "iso18245pkg_iso18245_ranges.csv")
    with table.open(encoding="utf-8", newline="") as handle:
        published = [
            (int(r["MCC START"]), int(r["MCC END"]), r["DESCRIPTION"].strip())
            for r in csv.DictReader(handle)
        ]
    assert list(MCC_RANGES) == published
    assert len(MCC_RANGES) == 18
    # Contiguous cover of 0000–9999.
    assert MCC_RANGES[0][0] == 0 and MCC_RANGES[-1][1] == 9999
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(MCC_RANGES))
    assert mcc_range(5411) == (5000, 5599, "Retail outlets")


def test_every_listed_mcc_maps() -> None:
    """All 981 codes of the MCC list map; only network-internal ones stay Uncategorized."""
    listing = _need(TAXONOMIES / "greggles_mcc_codes.csv")
    with listing.open(encoding="utf-8", newline="") as handle:
        codes = [r["mcc"] for r in csv.DictReader(handle)]
    assert len(codes) == 981
    unmapped = sorted(int(c) for c in codes if mcc_path(c) == UNCATEGORIZED)
    assert unmapped == [9700, 9701, 9702, 9950]


def test_every_plaid_row_maps_to_a_shipped_path() -> None:
    table = _need(TAXONOMIES / "plaid_pfc_taxonomy_v1.tsv")
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 104
    assert {r["DETAILED"] for r in rows} == set(PLAID_DETAILED)
    assert {r["PRIMARY"] for r in rows} == set(PLAID_PRIMARY)
    for row in rows:
        path = plaid_path(row["PRIMARY"], row["DETAILED"])
        assert path in SHIPPED and path != UNCATEGORIZED, row
        assert normalize_path(path) == path


def test_plaid_examples_and_fallbacks() -> None:
    assert plaid_path("FOOD_AND_DRINK", "FOOD_AND_DRINK_COFFEE") == "Food & drink/Coffee"
    assert plaid_path("travel", "travel_flights") == "Travel/Flights"
    assert plaid_path("TRANSFER_OUT", "TRANSFER_OUT_WITHDRAWAL") == "Cash/ATM withdrawals"
    assert plaid_path("RENT_AND_UTILITIES", "RENT_AND_UTILITIES_NEW_THING") == "Bills/Utilities"
    assert plaid_path("NOPE", "NOPE_X") == UNCATEGORIZED
    assert set(PLAID_PRIMARY.values()) <= SHIPPED


def test_taxonomy_examples() -> None:
    _need(TAXONOMIES)
    pairs = taxonomy_examples(SHARED)
    assert len(pairs) == len(set(pairs)) > 800
    assert all(text and path in SHIPPED and path != UNCATEGORIZED for text, path in pairs)
    as_dict = dict(pairs)
    assert as_dict["Grocery Stores, Supermarkets"] == "Food & drink/Groceries"
    assert as_dict["Purchases at coffee shops or cafes"] == "Food & drink/Coffee"
    assert as_dict["coffee"] == "Food & drink/Coffee"
    assert as_dict["HILTON HOTELS"] == "Travel/Lodging"
    per_group = Counter(path.split("/")[0] for _, path in pairs)
    shipped_groups = {p for p in SHIPPED if "/" not in p} - {UNCATEGORIZED}
    assert set(per_group) == shipped_groups  # every group gets seed text
