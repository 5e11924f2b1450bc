"""SCALE's category taxonomy: group → category → subcategory, written as ``"A/B/C"`` paths.

A path names a node at any depth (``"Food & drink"``, ``"Food & drink/Groceries"``); a
transaction's category is one path. Users may add their own categories through rules and
corrections: any well-formed path is accepted, the tree below is what the product ships with.

Which transactions count as spending: debits outside the ``Transfers`` group (moving money
between one's own accounts, or paying off one's own card, is not spending). Income: credits
outside ``Transfers``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

SEPARATOR = "/"
UNCATEGORIZED = "Uncategorized"
TRANSFERS = "Transfers"
MAX_DEPTH = 3
MAX_SEGMENT = 60

#: The shipped tree. Leaves may gain subcategories from the categorizer or from users.
TREE: dict[str, dict[str, tuple[str, ...]]] = {
    "Income": {
        "Salary": (),
        "Interest": (),
        "Benefits & pensions": (),
        "Refunds": (),
        "Other income": (),
    },
    "Housing": {"Rent": (), "Mortgage": (), "Council tax": (), "Home improvement": ()},
    "Bills": {
        "Utilities": ("Energy", "Water", "Broadband"),
        "Phone": (),
        "Subscriptions": (),
        "Insurance": (),
    },
    "Food & drink": {"Groceries": (), "Eating out": (), "Coffee": ()},
    "Transport": {"Public transport": (), "Fuel": (), "Taxi": (), "Parking": (), "Vehicle": ()},
    "Shopping": {"General": (), "Clothing": (), "Electronics": (), "Household": ()},
    "Leisure": {"Entertainment": (), "Sport & fitness": (), "Hobbies": ()},
    "Travel": {"Flights": (), "Lodging": (), "Trips": ()},
    "Health & care": {"Medical": (), "Pharmacy": (), "Personal care": ()},
    "Cash": {"ATM withdrawals": ()},
    "Financial": {"Fees": (), "Loan payments": (), "Taxes": (), "Charity": ()},
    "Transfers": {
        "Between accounts": (),
        "Savings": (),
        "Credit card payment": (),
        "Cash deposit": (),
    },
    UNCATEGORIZED: {},
}

#: Source hints (the demo generator, bank statement fields) → taxonomy paths.
HINT_PATHS: dict[str, str] = {
    "salary": "Income/Salary",
    "interest": "Income/Interest",
    "pension": "Income/Benefits & pensions",
    "refund": "Income/Refunds",
    "rent": "Housing/Rent",
    "mortgage": "Housing/Mortgage",
    "council_tax": "Housing/Council tax",
    "utilities": "Bills/Utilities",
    "phone": "Bills/Phone",
    "subscriptions": "Bills/Subscriptions",
    "insurance": "Bills/Insurance",
    "groceries": "Food & drink/Groceries",
    "eating_out": "Food & drink/Eating out",
    "transport": "Transport/Public transport",
    "fuel": "Transport/Fuel",
    "shopping": "Shopping/General",
    "entertainment": "Leisure/Entertainment",
    "travel": "Travel/Trips",
    "cash": "Cash/ATM withdrawals",
    "fees": "Financial/Fees",
    "loan": "Financial/Loan payments",
    "credit_card_payment": "Transfers/Credit card payment",
    "transfer": "Transfers/Between accounts",
    "savings": "Transfers/Savings",
    # Berka (PKDD'99) k_symbol values, as the Berka loader passes them.
    "household": "Bills/Utilities",
    "insurrance payment": "Bills/Insurance",
    "insurance payment": "Bills/Insurance",
    "interest credited": "Income/Interest",
    "old-age pension": "Income/Benefits & pensions",
    "loan payment": "Financial/Loan payments",
    "payment for statement": "Financial/Fees",
    "sanction interest if negative balance": "Financial/Fees",
}

_SEGMENT_RE = re.compile(r"^[\w][\w &',.()+\-]*$")


class CategoryError(ValueError):
    """A category path that is not well formed."""


def all_paths() -> list[str]:
    """Every node of the shipped tree, parents before children."""
    out: list[str] = []
    for group, categories in TREE.items():
        out.append(group)
        for category, subs in categories.items():
            out.append(f"{group}/{category}")
            out.extend(f"{group}/{category}/{sub}" for sub in subs)
    return out


def tree_json() -> list[dict[str, object]]:
    """The shipped tree as nested JSON nodes ``{name, path, children}``."""
    return [
        {
            "name": group,
            "path": group,
            "children": [
                {
                    "name": category,
                    "path": f"{group}/{category}",
                    "children": [
                        {"name": sub, "path": f"{group}/{category}/{sub}", "children": []}
                        for sub in subs
                    ],
                }
                for category, subs in categories.items()
            ],
        }
        for group, categories in TREE.items()
    ]


def normalize_path(raw: object) -> str:
    """A canonical path: segments trimmed, single spaces, known names in their shipped case.

    Raises :class:`CategoryError` naming what is wrong. Segments hold letters, digits, spaces
    and ``& ' , . ( ) + -``; at most three levels of at most 60 characters each.
    """
    if not isinstance(raw, str):
        raise CategoryError("category must be a string like 'Food & drink/Groceries'")
    text = unicodedata.normalize("NFC", raw).strip().strip(SEPARATOR)
    if not text:
        raise CategoryError("category is empty")
    segments = [" ".join(s.split()) for s in text.split(SEPARATOR)]
    if len(segments) > MAX_DEPTH:
        raise CategoryError(f"category has more than {MAX_DEPTH} levels: {raw!r}")
    for seg in segments:
        if not seg:
            raise CategoryError(f"category has an empty level: {raw!r}")
        if len(seg) > MAX_SEGMENT:
            raise CategoryError(f"category level longer than {MAX_SEGMENT} characters")
        if not _SEGMENT_RE.match(seg) or "--" in seg:
            raise CategoryError(
                f"category level {seg!r} may hold only letters, digits, spaces and & ' , . ( ) + -"
            )
    path = SEPARATOR.join(segments)
    return _CANONICAL.get(path.casefold(), path)


def hint_path(hint: str | None) -> str | None:
    """The taxonomy path of a source's category hint, or None when the hint is unknown."""
    if not hint:
        return None
    return HINT_PATHS.get(hint.strip().lower())


def group_of(path: str) -> str:
    return path.split(SEPARATOR, 1)[0]


def is_transfer(path: str) -> bool:
    return group_of(path) == TRANSFERS


def prefix_level(path: str, depth: int) -> str:
    """The ancestor of ``path`` at ``depth`` levels (the path itself when shallower)."""
    return SEPARATOR.join(path.split(SEPARATOR)[:depth])


def hint_table_rows() -> Iterable[tuple[str, str]]:
    return HINT_PATHS.items()


_CANONICAL: dict[str, str] = {p.casefold(): p for p in all_paths()}
