"""Card and aggregator category schemes mapped onto SCALE's taxonomy (``scale_ray.taxonomy``).

The shipped categorizer must answer in *our* paths, but the public labelled material is in
other schemes: ISO 18245 merchant category codes (what card networks attach to a payment) and
Plaid's personal-finance categories. :func:`mcc_path` and :func:`plaid_path` translate them, and
:func:`taxonomy_examples` turns the schemes' own descriptions into (text, path) pairs that seed
the model's known classes.

The ISO 18245 range table is kept here as constants (``MCC_RANGES``) so ``mcc_path`` needs no
file at run time; a test holds it equal to ``taxonomies/iso18245pkg_iso18245_ranges.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from scale_ray.taxonomy import UNCATEGORIZED

TAXONOMIES_DIR = "taxonomies"
MCC_FILE = "greggles_mcc_codes.csv"
PLAID_FILE = "plaid_pfc_taxonomy_v1.tsv"

#: The 18 ISO 18245 range groups: (first code, last code, description), as published.
MCC_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 699, "Reserved"),
    (700, 999, "Agricultural services"),
    (1000, 1499, "Reserved"),
    (1500, 2999, "Contracted services"),
    (3000, 3999, "Reserved for private use"),
    (4000, 4799, "Transportation"),
    (4800, 4999, "Utilities"),
    (5000, 5599, "Retail outlets"),
    (5600, 5699, "Clothing outlets"),
    (5700, 5999, "Miscellaneous outlets"),
    (6000, 7299, "Service providers"),
    (7300, 7529, "Business services"),
    (7530, 7799, "Repair services"),
    (7800, 7999, "Amusement and entertainment"),
    (8000, 8999, "Professional services and membership organizations"),
    (9000, 9199, "Reserved for ISO use"),
    (9200, 9402, "Government services"),
    (9403, 9999, "Other"),
)

#: Fallback path per range group. The private-use block 3000–3999 is split by the card
#: networks into airlines, car rental and lodging (``_MCC_SUBRANGES``) before this applies.
_RANGE_PATHS: dict[str, str] = {
    "Reserved": UNCATEGORIZED,
    "Agricultural services": "Housing/Home improvement",
    "Contracted services": "Housing/Home improvement",
    "Reserved for private use": "Travel/Trips",
    "Transportation": "Transport/Public transport",
    "Utilities": "Bills/Utilities",
    "Retail outlets": "Shopping/General",
    "Clothing outlets": "Shopping/Clothing",
    "Miscellaneous outlets": "Shopping/General",
    "Service providers": "Shopping/General",
    "Business services": "Shopping/General",
    "Repair services": "Shopping/General",
    "Amusement and entertainment": "Leisure/Entertainment",
    "Professional services and membership organizations": "Shopping/General",
    "Reserved for ISO use": UNCATEGORIZED,
    "Government services": "Financial/Taxes",
    "Other": "Shopping/General",
}

#: Sub-ranges checked before the range groups (inclusive bounds).
_MCC_SUBRANGES: tuple[tuple[int, int, str], ...] = (
    (3000, 3350, "Travel/Flights"),
    (3351, 3500, "Travel/Trips"),  # car rental
    (3501, 3999, "Travel/Lodging"),
    (5511, 5599, "Transport/Vehicle"),  # car, motorcycle and boat dealers
    (7531, 7549, "Transport/Vehicle"),  # body shops, tyres, car washes, towing
    (8011, 8099, "Health & care/Medical"),
    (8211, 8299, "Financial/Fees"),  # schools and colleges: tuition fees
)

#: Codes whose path differs from their range's.
MCC_OVERRIDES: dict[int, str] = {
    742: "Health & care/Medical",  # veterinary
    2741: "Shopping/General",
    2791: "Shopping/General",
    2842: "Shopping/Household",
    4011: "Transport/Public transport",
    4111: "Transport/Public transport",
    4112: "Transport/Public transport",
    4119: "Health & care/Medical",  # ambulance
    4121: "Transport/Taxi",
    4131: "Transport/Public transport",
    4214: "Shopping/General",
    4215: "Shopping/General",
    4225: "Shopping/Household",
    4411: "Travel/Trips",
    4457: "Leisure/Hobbies",
    4468: "Leisure/Hobbies",
    4511: "Travel/Flights",
    4582: "Travel/Flights",
    4722: "Travel/Trips",
    4723: "Travel/Trips",
    4784: "Transport/Vehicle",
    4812: "Shopping/Electronics",
    4814: "Bills/Phone",
    4815: "Bills/Phone",
    4816: "Bills/Utilities/Broadband",
    4821: "Bills/Phone",
    4829: "Transfers/Between accounts",
    4899: "Bills/Subscriptions",
    4900: "Bills/Utilities",
    5013: "Transport/Vehicle",
    5021: "Shopping/Household",
    5039: "Housing/Home improvement",
    5044: "Shopping/Electronics",
    5045: "Shopping/Electronics",
    5047: "Health & care/Medical",
    5065: "Shopping/Electronics",
    5072: "Housing/Home improvement",
    5074: "Housing/Home improvement",
    5122: "Health & care/Pharmacy",
    5137: "Shopping/Clothing",
    5139: "Shopping/Clothing",
    5172: "Transport/Fuel",
    5192: "Shopping/General",
    5198: "Housing/Home improvement",
    5200: "Housing/Home improvement",
    5211: "Housing/Home improvement",
    5231: "Housing/Home improvement",
    5251: "Housing/Home improvement",
    5261: "Housing/Home improvement",
    5271: "Housing/Home improvement",
    5300: "Shopping/General",
    5309: "Shopping/General",
    5310: "Shopping/General",
    5311: "Shopping/General",
    5331: "Shopping/General",
    5399: "Shopping/General",
    5411: "Food & drink/Groceries",
    5422: "Food & drink/Groceries",
    5441: "Food & drink/Groceries",
    5451: "Food & drink/Groceries",
    5462: "Food & drink/Groceries",
    5499: "Food & drink/Groceries",
    5531: "Transport/Vehicle",
    5532: "Transport/Vehicle",
    5533: "Transport/Vehicle",
    5541: "Transport/Fuel",
    5542: "Transport/Fuel",
    5551: "Leisure/Hobbies",
    5561: "Leisure/Hobbies",
    5651: "Shopping/Clothing",
    5655: "Shopping/Clothing",
    5691: "Shopping/Clothing",
    5697: "Shopping/Clothing",
    5712: "Shopping/Household",
    5713: "Shopping/Household",
    5714: "Shopping/Household",
    5718: "Shopping/Household",
    5719: "Shopping/Household",
    5722: "Shopping/Household",
    5732: "Shopping/Electronics",
    5733: "Leisure/Hobbies",
    5734: "Shopping/Electronics",
    5735: "Leisure/Entertainment",
    5811: "Food & drink/Eating out",
    5812: "Food & drink/Eating out",
    5813: "Food & drink/Eating out",
    5814: "Food & drink/Eating out",
    5815: "Leisure/Entertainment",
    5816: "Leisure/Hobbies",
    5817: "Bills/Subscriptions",
    5818: "Bills/Subscriptions",
    5912: "Health & care/Pharmacy",
    5921: "Food & drink/Groceries",
    5940: "Leisure/Sport & fitness",
    5941: "Leisure/Sport & fitness",
    5942: "Shopping/General",
    5943: "Shopping/General",
    5945: "Leisure/Hobbies",
    5946: "Shopping/Electronics",
    5960: "Bills/Insurance",
    5962: "Travel/Trips",
    5968: "Bills/Subscriptions",
    5970: "Leisure/Hobbies",
    5971: "Leisure/Hobbies",
    5972: "Leisure/Hobbies",
    5975: "Health & care/Medical",
    5976: "Health & care/Medical",
    5977: "Health & care/Personal care",
    5983: "Bills/Utilities/Energy",
    5992: "Shopping/General",
    5995: "Shopping/Household",
    5996: "Housing/Home improvement",
    5997: "Shopping/Electronics",
    6010: "Cash/ATM withdrawals",
    6011: "Cash/ATM withdrawals",
    6012: "Financial/Fees",
    6051: "Cash/ATM withdrawals",
    6211: "Transfers/Savings",
    6300: "Bills/Insurance",
    6381: "Bills/Insurance",
    6399: "Bills/Insurance",
    6513: "Housing/Rent",
    7011: "Travel/Lodging",
    7012: "Travel/Lodging",
    7032: "Leisure/Sport & fitness",
    7033: "Travel/Lodging",
    7210: "Health & care/Personal care",
    7211: "Health & care/Personal care",
    7216: "Health & care/Personal care",
    7217: "Shopping/Household",
    7230: "Health & care/Personal care",
    7251: "Health & care/Personal care",
    7273: "Leisure/Entertainment",
    7276: "Financial/Fees",
    7277: "Health & care/Medical",
    7296: "Shopping/Clothing",
    7297: "Health & care/Personal care",
    7298: "Health & care/Personal care",
    7321: "Financial/Fees",
    7342: "Housing/Home improvement",
    7349: "Shopping/Household",
    7372: "Bills/Subscriptions",
    7375: "Bills/Subscriptions",
    7379: "Shopping/Electronics",
    7394: "Shopping/Household",
    7511: "Transport/Fuel",
    7512: "Travel/Trips",
    7513: "Travel/Trips",
    7519: "Travel/Trips",
    7523: "Transport/Parking",
    7622: "Shopping/Electronics",
    7623: "Housing/Home improvement",
    7629: "Shopping/Electronics",
    7641: "Shopping/Household",
    7829: "Leisure/Entertainment",
    7832: "Leisure/Entertainment",
    7841: "Leisure/Entertainment",
    7911: "Leisure/Sport & fitness",
    7932: "Leisure/Sport & fitness",
    7933: "Leisure/Sport & fitness",
    7941: "Leisure/Sport & fitness",
    7991: "Leisure/Entertainment",
    7992: "Leisure/Sport & fitness",
    7993: "Leisure/Hobbies",
    7994: "Leisure/Entertainment",
    7997: "Leisure/Sport & fitness",
    8111: "Financial/Fees",
    8351: "Financial/Fees",  # childcare fees
    8398: "Financial/Charity",
    8641: "Financial/Charity",
    8651: "Financial/Charity",
    8661: "Financial/Charity",
    8675: "Transport/Vehicle",
    8699: "Bills/Subscriptions",
    8931: "Financial/Fees",
    9211: "Financial/Fees",
    9222: "Financial/Fees",
    9223: "Financial/Fees",
    9311: "Financial/Taxes",
    9399: "Financial/Taxes",
    9402: "Shopping/General",
    9405: "Financial/Taxes",
    9751: "Food & drink/Groceries",  # UK supermarkets
    9752: "Transport/Fuel",  # UK petrol stations
    # Network-internal codes, not merchants.
    9700: UNCATEGORIZED,
    9701: UNCATEGORIZED,
    9702: UNCATEGORIZED,
    9950: UNCATEGORIZED,
}


def mcc_range(mcc: int) -> tuple[int, int, str] | None:
    """The ISO 18245 range group holding ``mcc``, or None outside 0–9999."""
    for first, last, description in MCC_RANGES:
        if first <= mcc <= last:
            return first, last, description
    return None


def mcc_path(mcc: int | str) -> str:
    """Our taxonomy path for an ISO 18245 merchant category code (``Uncategorized`` if unknown)."""
    try:
        code = int(str(mcc).strip())
    except ValueError:
        return UNCATEGORIZED
    if code in MCC_OVERRIDES:
        return MCC_OVERRIDES[code]
    for first, last, path in _MCC_SUBRANGES:
        if first <= code <= last:
            return path
    group = mcc_range(code)
    return _RANGE_PATHS[group[2]] if group else UNCATEGORIZED


#: Plaid personal-finance category (v1), detailed → our path. Covers all 104 detailed codes.
PLAID_DETAILED: dict[str, str] = {
    "INCOME_DIVIDENDS": "Income/Interest",
    "INCOME_INTEREST_EARNED": "Income/Interest",
    "INCOME_RETIREMENT_PENSION": "Income/Benefits & pensions",
    "INCOME_TAX_REFUND": "Income/Refunds",
    "INCOME_UNEMPLOYMENT": "Income/Benefits & pensions",
    "INCOME_WAGES": "Income/Salary",
    "INCOME_OTHER_INCOME": "Income/Other income",
    "TRANSFER_IN_CASH_ADVANCES_AND_LOANS": "Transfers/Between accounts",
    "TRANSFER_IN_DEPOSIT": "Transfers/Cash deposit",
    "TRANSFER_IN_INVESTMENT_AND_RETIREMENT_FUNDS": "Transfers/Savings",
    "TRANSFER_IN_SAVINGS": "Transfers/Savings",
    "TRANSFER_IN_ACCOUNT_TRANSFER": "Transfers/Between accounts",
    "TRANSFER_IN_OTHER_TRANSFER_IN": "Transfers/Between accounts",
    "TRANSFER_OUT_INVESTMENT_AND_RETIREMENT_FUNDS": "Transfers/Savings",
    "TRANSFER_OUT_SAVINGS": "Transfers/Savings",
    "TRANSFER_OUT_WITHDRAWAL": "Cash/ATM withdrawals",
    "TRANSFER_OUT_ACCOUNT_TRANSFER": "Transfers/Between accounts",
    "TRANSFER_OUT_OTHER_TRANSFER_OUT": "Transfers/Between accounts",
    "LOAN_PAYMENTS_CAR_PAYMENT": "Financial/Loan payments",
    "LOAN_PAYMENTS_CREDIT_CARD_PAYMENT": "Transfers/Credit card payment",
    "LOAN_PAYMENTS_PERSONAL_LOAN_PAYMENT": "Financial/Loan payments",
    "LOAN_PAYMENTS_MORTGAGE_PAYMENT": "Housing/Mortgage",
    "LOAN_PAYMENTS_STUDENT_LOAN_PAYMENT": "Financial/Loan payments",
    "LOAN_PAYMENTS_OTHER_PAYMENT": "Financial/Loan payments",
    "BANK_FEES_ATM_FEES": "Financial/Fees",
    "BANK_FEES_FOREIGN_TRANSACTION_FEES": "Financial/Fees",
    "BANK_FEES_INSUFFICIENT_FUNDS": "Financial/Fees",
    "BANK_FEES_INTEREST_CHARGE": "Financial/Fees",
    "BANK_FEES_OVERDRAFT_FEES": "Financial/Fees",
    "BANK_FEES_OTHER_BANK_FEES": "Financial/Fees",
    "ENTERTAINMENT_CASINOS_AND_GAMBLING": "Leisure/Entertainment",
    "ENTERTAINMENT_MUSIC_AND_AUDIO": "Leisure/Entertainment",
    "ENTERTAINMENT_SPORTING_EVENTS_AMUSEMENT_PARKS_AND_MUSEUMS": "Leisure/Entertainment",
    "ENTERTAINMENT_TV_AND_MOVIES": "Leisure/Entertainment",
    "ENTERTAINMENT_VIDEO_GAMES": "Leisure/Hobbies",
    "ENTERTAINMENT_OTHER_ENTERTAINMENT": "Leisure/Entertainment",
    "FOOD_AND_DRINK_BEER_WINE_AND_LIQUOR": "Food & drink/Groceries",
    "FOOD_AND_DRINK_COFFEE": "Food & drink/Coffee",
    "FOOD_AND_DRINK_FAST_FOOD": "Food & drink/Eating out",
    "FOOD_AND_DRINK_GROCERIES": "Food & drink/Groceries",
    "FOOD_AND_DRINK_RESTAURANT": "Food & drink/Eating out",
    "FOOD_AND_DRINK_VENDING_MACHINES": "Food & drink/Eating out",
    "FOOD_AND_DRINK_OTHER_FOOD_AND_DRINK": "Food & drink/Eating out",
    "GENERAL_MERCHANDISE_BOOKSTORES_AND_NEWSSTANDS": "Shopping/General",
    "GENERAL_MERCHANDISE_CLOTHING_AND_ACCESSORIES": "Shopping/Clothing",
    "GENERAL_MERCHANDISE_CONVENIENCE_STORES": "Food & drink/Groceries",
    "GENERAL_MERCHANDISE_DEPARTMENT_STORES": "Shopping/General",
    "GENERAL_MERCHANDISE_DISCOUNT_STORES": "Shopping/General",
    "GENERAL_MERCHANDISE_ELECTRONICS": "Shopping/Electronics",
    "GENERAL_MERCHANDISE_GIFTS_AND_NOVELTIES": "Shopping/General",
    "GENERAL_MERCHANDISE_OFFICE_SUPPLIES": "Shopping/General",
    "GENERAL_MERCHANDISE_ONLINE_MARKETPLACES": "Shopping/General",
    "GENERAL_MERCHANDISE_PET_SUPPLIES": "Shopping/Household",
    "GENERAL_MERCHANDISE_SPORTING_GOODS": "Leisure/Sport & fitness",
    "GENERAL_MERCHANDISE_SUPERSTORES": "Shopping/General",
    "GENERAL_MERCHANDISE_TOBACCO_AND_VAPE": "Shopping/General",
    "GENERAL_MERCHANDISE_OTHER_GENERAL_MERCHANDISE": "Leisure/Hobbies",
    "HOME_IMPROVEMENT_FURNITURE": "Shopping/Household",
    "HOME_IMPROVEMENT_HARDWARE": "Housing/Home improvement",
    "HOME_IMPROVEMENT_REPAIR_AND_MAINTENANCE": "Housing/Home improvement",
    "HOME_IMPROVEMENT_SECURITY": "Housing/Home improvement",
    "HOME_IMPROVEMENT_OTHER_HOME_IMPROVEMENT": "Housing/Home improvement",
    "MEDICAL_DENTAL_CARE": "Health & care/Medical",
    "MEDICAL_EYE_CARE": "Health & care/Medical",
    "MEDICAL_NURSING_CARE": "Health & care/Medical",
    "MEDICAL_PHARMACIES_AND_SUPPLEMENTS": "Health & care/Pharmacy",
    "MEDICAL_PRIMARY_CARE": "Health & care/Medical",
    "MEDICAL_VETERINARY_SERVICES": "Health & care/Medical",
    "MEDICAL_OTHER_MEDICAL": "Health & care/Medical",
    "PERSONAL_CARE_GYMS_AND_FITNESS_CENTERS": "Leisure/Sport & fitness",
    "PERSONAL_CARE_HAIR_AND_BEAUTY": "Health & care/Personal care",
    "PERSONAL_CARE_LAUNDRY_AND_DRY_CLEANING": "Health & care/Personal care",
    "PERSONAL_CARE_OTHER_PERSONAL_CARE": "Health & care/Personal care",
    "GENERAL_SERVICES_ACCOUNTING_AND_FINANCIAL_PLANNING": "Financial/Fees",
    "GENERAL_SERVICES_AUTOMOTIVE": "Transport/Vehicle",
    "GENERAL_SERVICES_CHILDCARE": "Financial/Fees",
    "GENERAL_SERVICES_CONSULTING_AND_LEGAL": "Financial/Fees",
    "GENERAL_SERVICES_EDUCATION": "Financial/Fees",
    "GENERAL_SERVICES_INSURANCE": "Bills/Insurance",
    "GENERAL_SERVICES_POSTAGE_AND_SHIPPING": "Shopping/General",
    "GENERAL_SERVICES_STORAGE": "Shopping/Household",
    "GENERAL_SERVICES_OTHER_GENERAL_SERVICES": "Bills/Subscriptions",
    "GOVERNMENT_AND_NON_PROFIT_DONATIONS": "Financial/Charity",
    "GOVERNMENT_AND_NON_PROFIT_GOVERNMENT_DEPARTMENTS_AND_AGENCIES": "Financial/Taxes",
    "GOVERNMENT_AND_NON_PROFIT_TAX_PAYMENT": "Financial/Taxes",
    "GOVERNMENT_AND_NON_PROFIT_OTHER_GOVERNMENT_AND_NON_PROFIT": "Financial/Taxes",
    "TRANSPORTATION_BIKES_AND_SCOOTERS": "Transport/Public transport",
    "TRANSPORTATION_GAS": "Transport/Fuel",
    "TRANSPORTATION_PARKING": "Transport/Parking",
    "TRANSPORTATION_PUBLIC_TRANSIT": "Transport/Public transport",
    "TRANSPORTATION_TAXIS_AND_RIDE_SHARES": "Transport/Taxi",
    "TRANSPORTATION_TOLLS": "Transport/Vehicle",
    "TRANSPORTATION_OTHER_TRANSPORTATION": "Transport/Public transport",
    "TRAVEL_FLIGHTS": "Travel/Flights",
    "TRAVEL_LODGING": "Travel/Lodging",
    "TRAVEL_RENTAL_CARS": "Travel/Trips",
    "TRAVEL_OTHER_TRAVEL": "Travel/Trips",
    "RENT_AND_UTILITIES_GAS_AND_ELECTRICITY": "Bills/Utilities/Energy",
    "RENT_AND_UTILITIES_INTERNET_AND_CABLE": "Bills/Utilities/Broadband",
    "RENT_AND_UTILITIES_RENT": "Housing/Rent",
    "RENT_AND_UTILITIES_SEWAGE_AND_WASTE_MANAGEMENT": "Bills/Utilities/Water",
    "RENT_AND_UTILITIES_TELEPHONE": "Bills/Phone",
    "RENT_AND_UTILITIES_WATER": "Bills/Utilities/Water",
    "RENT_AND_UTILITIES_OTHER_UTILITIES": "Bills/Utilities",
}

#: Plaid primary → our path, for a detailed code this table does not know.
PLAID_PRIMARY: dict[str, str] = {
    "INCOME": "Income/Other income",
    "TRANSFER_IN": "Transfers/Between accounts",
    "TRANSFER_OUT": "Transfers/Between accounts",
    "LOAN_PAYMENTS": "Financial/Loan payments",
    "BANK_FEES": "Financial/Fees",
    "ENTERTAINMENT": "Leisure/Entertainment",
    "FOOD_AND_DRINK": "Food & drink/Eating out",
    "GENERAL_MERCHANDISE": "Shopping/General",
    "HOME_IMPROVEMENT": "Housing/Home improvement",
    "MEDICAL": "Health & care/Medical",
    "PERSONAL_CARE": "Health & care/Personal care",
    "GENERAL_SERVICES": "Shopping/General",
    "GOVERNMENT_AND_NON_PROFIT": "Financial/Taxes",
    "TRANSPORTATION": "Transport/Public transport",
    "TRAVEL": "Travel/Trips",
    "RENT_AND_UTILITIES": "Bills/Utilities",
}


def plaid_path(primary: str, detailed: str) -> str:
    """Our taxonomy path for a Plaid PFC v1 category (``Uncategorized`` if unknown)."""
    detail = (detailed or "").strip().upper()
    if detail in PLAID_DETAILED:
        return PLAID_DETAILED[detail]
    return PLAID_PRIMARY.get((primary or "").strip().upper(), UNCATEGORIZED)


def _plaid_name(primary: str, detailed: str) -> str:
    """``FOOD_AND_DRINK_COFFEE`` → ``"coffee"`` (the detailed name without its primary)."""
    name = detailed.removeprefix(f"{primary}_") if detailed != primary else detailed
    return name.replace("_", " ").lower()


def taxonomy_examples(shared_data: Path) -> list[tuple[str, str]]:
    """(text, path) seed pairs from the MCC and Plaid descriptions, distinct, in file order.

    Reads ``taxonomies/greggles_mcc_codes.csv`` (``edited_description``, via :func:`mcc_path`)
    and ``taxonomies/plaid_pfc_taxonomy_v1.tsv`` (``DESCRIPTION`` and the detailed name, via
    :func:`plaid_path`) under ``shared_data``; rows that map to ``Uncategorized`` are skipped.
    """
    folder = Path(shared_data) / TAXONOMIES_DIR
    pairs: list[tuple[str, str]] = []
    with (folder / MCC_FILE).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            path = mcc_path(row["mcc"])
            text = " ".join((row.get("edited_description") or "").split())
            if text and path != UNCATEGORIZED:
                pairs.append((text, path))
    with (folder / PLAID_FILE).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            primary, detailed = row["PRIMARY"].strip(), row["DETAILED"].strip()
            path = plaid_path(primary, detailed)
            if path == UNCATEGORIZED:
                continue
            for text in (" ".join(row["DESCRIPTION"].split()), _plaid_name(primary, detailed)):
                if text:
                    pairs.append((text, path))
    return list(dict.fromkeys(pairs))
