"""Canonical merchant keys, and random "bank-garbled" views of them for contrastive training.

Banks print the same merchant in many ways: a payment processor's prefix (``SQ *``,
``PAYPAL *``), a store number (``tesco stores 5504`` / ``tesco stores 2503``), a masked card
number, a reference, a date, a trailing town or country code, a domain (``amazon.co.uk``). The
categorizer embeds one *key* per merchant: :func:`normalize_merchant` strips that noise so the
variants share one key (one embedding-cache entry, one model input), and so that no card,
account or phone number reaches the embedding model (the project's PII rule: the only digits
kept belong to a name, such as ``3 mobile`` or ``365online``, never more than four in a row).

:func:`descriptor_noise` does the opposite: it garbles a clean merchant string the way banks do,
giving the contrastive trainer two views of one merchant. It is deterministic given its
``random.Random``.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable

# --- patterns -------------------------------------------------------------------------------

_APOSTROPHES_RE = re.compile(r"['’‘`´]")
#: ``****1234``, ``xxxx 1234``, ``4321xxxx1234``, ``##1234``.
_MASKED_CARD_RE = re.compile(
    r"(?<![a-z0-9])(?:\d{2,6}[x*#]{3,}\d{2,6}|[x*#]{3,}[\s-]?\d{2,6})(?![a-z0-9])"
)
_MONTHS = (
    "january|february|march|april|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|may|jun|jul|aug|sept|sep|oct|nov|dec"
)
_DATE_RES = (
    re.compile(r"(?<!\d)\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}(?!\d)"),
    re.compile(r"(?<!\d)\d{4}[/.-]\d{1,2}[/.-]\d{1,2}(?!\d)"),
    re.compile(r"(?<!\d)\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]m)?(?![a-z0-9])"),
    re.compile(rf"(?<![a-z0-9])\d{{1,2}}\s?(?:{_MONTHS})(?:\s?\d{{2,4}})?(?![a-z0-9])"),
)
#: Processor and bank-channel prefixes, removed (repeatedly) from the start of the text.
_PREFIX_RES = tuple(
    re.compile(p)
    for p in (
        r"^(?:sq|sqr|paypal|pp|sp|tst|iz|izettle|sumup|ztl|crv|zettle|sms|gc|dnh)\s?\*\s*",
        r"^paypal\s+(?=\S)",
        r"^(?:card payment to|card payment|card purchase|debit card purchase|debit card)\s+",
        r"^(?:visa purchase|visa debit|visa|pos purchase|pos|contactless|cnp|ecom)\s+(?=\S)",
        r"^(?:direct debit|dd|fpo|fpi|bgc|bill payment to|bill payment)\s+(?=\S)",
        r"^(?:upi|imps|neft|rtgs|nach|ach)[\s/:-]+(?:(?:p2m|p2a|dr|cr)[\s/:-]+)?",
        r"^(?:https?://)?www\.?\s*",
    )
)
_URL_SCHEME_RE = re.compile(r"https?://")
_WWW_RE = re.compile(r"(?<![a-z0-9])www(?:\.|\s+|$)")
_EMAIL_RE = re.compile(r"[a-z0-9._%+-]+@([a-z0-9][a-z0-9-]*)\.[a-z0-9.-]*")
_TLDS = (
    "com", "co", "uk", "org", "net", "gov", "ac", "edu", "ie", "in", "io", "eu", "de", "fr",
    "nl", "es", "it", "biz", "info", "us", "nhs", "sch", "ltd", "plc", "me", "tv", "app",
    "shop", "store", "online", "au", "ca",
)  # fmt: skip
#: Every prefix of a top-level-domain part: bank fields truncate ``.co.uk`` to ``.co.u``.
_TLD_FRAGMENTS = sorted({t[:i] for t in _TLDS for i in range(1, len(t) + 1)}, key=len)[::-1]
_DOMAIN_RE = re.compile(
    r"(?<![a-z0-9.])([a-z0-9][a-z0-9-]*)(?:\.(?:" + "|".join(_TLD_FRAGMENTS) + r")?)+(?![a-z0-9])"
)
#: ``no.12``, ``st 0042``, ``no.XXXX`` store numbers (the number and its marker).
_STORE_NO_RE = re.compile(r"(?<![a-z0-9])(?:no|nr|st|unit)\.?\s?#?\s?(?:\d+|[x#*]{2,})(?![a-z0-9])")
_BRAND_NUMBER_RE = re.compile(r"^\d{1,4}[^\W\d_]{3,}$")
_NON_WORD_RE = re.compile(r"[\W_]+")
_UK_POSTCODE_RE = re.compile(r"(?:^|\s)[a-z]{1,2}\d[a-z\d]?\s?\d[a-z]{2}$")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_COUNTRY_CODES = _word_set(
    "gb gbr uk in ind us usa ie irl fr fra de deu nl nld es esp it ita be bel ae are sg sgp "
    "au aus ca can ch che ny tx fl"
)
_CITIES = _word_set(
    # UK
    "london birmingham manchester liverpool leeds sheffield bristol glasgow edinburgh cardiff "
    "belfast leicester coventry nottingham newcastle bradford wolverhampton solihull walsall "
    "dudley derby southampton portsmouth brighton oxford cambridge reading york bath luton "
    "aberdeen dundee swansea plymouth hull norwich exeter worcester gloucester telford "
    "croydon heathrow gatwick stansted redditch bromsgrove sutton kingston "
    # India
    "mumbai delhi bangalore bengaluru chennai kolkata hyderabad pune ahmedabad jaipur lucknow "
    "surat noida gurgaon gurugram kochi chandigarh indore bhopal nagpur thane "
    # US
    "chicago houston phoenix philadelphia dallas austin seattle boston miami atlanta denver "
    "washington "
    # country names
    "england scotland wales india"
)
_MULTIWORD_PLACES = frozenset(
    {
        ("new", "delhi"),
        ("navi", "mumbai"),
        ("new", "york"),
        ("los", "angeles"),
        ("san", "francisco"),
        ("san", "diego"),
        ("san", "jose"),
        ("las", "vegas"),
        ("milton", "keynes"),
        ("sutton", "coldfield"),
        ("west", "bromwich"),
        ("stoke", "on", "trent"),
        ("united", "kingdom"),
        ("great", "britain"),
        ("united", "states"),
        ("northern", "ireland"),
    }
)
#: Legal-form words (and the truncations bank fields leave of ``limited``).
_LEGAL_SUFFIXES = _word_set("ltd limited limite limit limi lim lt plc llc llp inc pvt corp com www")
#: Words a removed date or reference leaves dangling ("... ON 12 MAR", "... REF 88812").
_DANGLING = _word_set("on at ref via")
_TRAILING_DROP = _COUNTRY_CODES | _CITIES | _LEGAL_SUFFIXES | _DANGLING
#: A place after one of these belongs to the name (``bank of india``, ``university of york``).
_KEEP_AFTER = _word_set("of the and at in on de la le del du van von st")


def mask_digits(text: str) -> str:
    """Every digit replaced by ``#``: card, account and phone numbers must not reach embeddings."""
    return re.sub(r"\d", "#", text)


def _letters_only(text: str) -> str:
    return " ".join("".join(ch if ch.isalpha() else " " for ch in text).split())


def _strip_prefixes(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for pattern in _PREFIX_RES:
            stripped = pattern.sub("", text, count=1).lstrip()
            if stripped != text and stripped:
                text, changed = stripped, True
    return text


def _is_reference(token: str) -> bool:
    """Letters mixed with at least two digits, five characters or more (``p016bbf59b``).

    A number then a word (``365online``, ``123reg``) is a brand, not a reference.
    """
    digits = sum(ch.isdigit() for ch in token)
    if len(token) < 5 or digits < 2 or digits == len(token):
        return False
    return not _BRAND_NUMBER_RE.match(token)


def _keep_token(index: int, token: str, tokens: list[str]) -> bool:
    if len(token) >= 3 and token.strip("x") == "":
        return False  # digits masked with X
    if token.isdigit():
        # A short leading number followed by a name is a brand ("3 mobile", "7 eleven").
        return index == 0 and len(token) <= 3 and len(tokens) > 1
    return not _is_reference(token)


def _strip_trailing_places(tokens: list[str]) -> list[str]:
    while len(tokens) > 1:
        text = " ".join(tokens)
        match = _UK_POSTCODE_RE.search(text)
        if match and len(text[: match.start()].split()) >= 1:
            tokens = text[: match.start()].split()
            continue
        size = next((k for k in (3, 2) if tuple(tokens[-k:]) in _MULTIWORD_PLACES), 1)
        if size == 1 and tokens[-1] not in _TRAILING_DROP:
            return tokens
        if len(tokens) <= size or not _droppable(tokens, size):
            return tokens
        tokens = tokens[:-size]
    return tokens


def _droppable(tokens: list[str], size: int) -> bool:
    return tokens[-size - 1] not in _KEEP_AFTER


def normalize_merchant(text: str | None) -> str:
    """The canonical merchant key: lower-case words, without processor/number/place noise.

    ``"SQ *COFFEE HOUSE 1234 LONDON GB"`` → ``"coffee house"``; ``"tesco stores 5504"`` →
    ``"tesco stores"``; ``"www.amazon.co.uk"`` → ``"amazon"``. Never empty when the input had
    letters (falls back to its letters); empty when it had none (``"4423"``).
    """
    if not text:
        return ""
    raw = unicodedata.normalize("NFKC", text).lower()
    work = _APOSTROPHES_RE.sub("", raw)
    work = _MASKED_CARD_RE.sub(" ", work)
    for pattern in _DATE_RES:
        work = pattern.sub(" ", work)
    work = _strip_prefixes(" ".join(work.split()))
    after_prefixes = work
    work = _URL_SCHEME_RE.sub(" ", work)
    work = _WWW_RE.sub(" ", work)
    work = _EMAIL_RE.sub(r" \1 ", work)
    work = _DOMAIN_RE.sub(r"\1", work)
    work = _STORE_NO_RE.sub(" ", work)
    tokens = _NON_WORD_RE.sub(" ", work).split()
    tokens = [t for i, t in enumerate(tokens) if _keep_token(i, t, tokens)]
    tokens = _strip_trailing_places(tokens)
    key = " ".join(tokens)
    if any(ch.isalpha() for ch in key):
        return key
    return _letters_only(after_prefixes) or _letters_only(raw)


# --- noisy views ----------------------------------------------------------------------------

NOISE_PREFIXES = (
    "SQ *", "PAYPAL *", "SP *", "TST* ", "IZ *", "SUMUP *", "ZTL*", "CRV*", "PP*", "POS ",
    "CARD PAYMENT TO ", "VISA PURCHASE ", "DD ", "FPO ",
)  # fmt: skip
NOISE_PLACES = (
    "LONDON", "BIRMINGHAM", "MANCHESTER", "LEEDS", "GLASGOW", "BRISTOL", "MUMBAI", "DELHI",
    "BANGALORE", "CHENNAI", "NEW YORK", "CHICAGO", "GB", "GBR", "UK", "IN", "US",
)  # fmt: skip
_NOISE_COUNTRIES = ("GB", "GBR", "UK", "IN", "US")
_SEPARATORS = ("-", ".", "/", "*", "_", "  ", "")


def _words(text: str) -> list[str]:
    return text.split()


def _noise_drop_word(text: str, rng: random.Random) -> str:
    words = _words(text)
    if len(words) < 2:
        return text
    # Keep at least one word with a letter, so the view still names the merchant.
    choices = [
        i
        for i in range(len(words))
        if any(ch.isalpha() for w in words[:i] + words[i + 1 :] for ch in w)
    ]
    if not choices:
        return text
    drop = rng.choice(choices)
    return " ".join(words[:drop] + words[drop + 1 :])


def _noise_truncate(text: str, rng: random.Random) -> str:
    words = _words(text)
    if not words:
        return text
    limit = max(rng.randint(18, 25), len(words[0]))
    return text[:limit].rstrip()


def _noise_store_number(text: str, rng: random.Random) -> str:
    words = _words(text)
    number = str(rng.randint(1, 9999))
    if len(words) > 1 and words[-1].isdigit():
        return " ".join([*words[:-1], number])
    marker = rng.choice((" ", " ", " #", " NO.", " ST "))
    return f"{text}{marker}{number}"


def _noise_suffix(text: str, rng: random.Random) -> str:
    place = rng.choice(NOISE_PLACES)
    if place not in _NOISE_COUNTRIES and rng.random() < 0.5:
        place = f"{place} {rng.choice(_NOISE_COUNTRIES)}"
    return f"{text} {place}"


def _noise_prefix(text: str, rng: random.Random) -> str:
    return rng.choice(NOISE_PREFIXES) + text


def _noise_mask(text: str, rng: random.Random) -> str:
    if any(ch.isdigit() for ch in text):
        return re.sub(r"\d", rng.choice(("#", "X", "*")), text)
    digits = "".join(str(rng.randint(0, 9)) for _ in range(4))
    return f"{text} {rng.choice(('****', 'XXXX', 'xxxxxxxxxxxx'))}{digits}"


def _noise_separators(text: str, rng: random.Random) -> str:
    return rng.choice(_SEPARATORS).join(_words(text))


def _noise_upper(text: str, rng: random.Random) -> str:
    return text.upper()


#: Garbling steps in the order they are applied (a bank truncates its name field, then adds
#: store, place and processor; the channel masks and re-spaces last).
_NOISE_STEPS: tuple[Callable[[str, random.Random], str], ...] = (
    _noise_drop_word,
    _noise_truncate,
    _noise_store_number,
    _noise_suffix,
    _noise_prefix,
    _noise_mask,
    _noise_separators,
    _noise_upper,
)


def descriptor_noise(text: str, rng: random.Random) -> str:
    """A random bank-style view of ``text``: 1–3 garbling steps, deterministic given ``rng``.

    At least one word of ``text`` survives whole (case aside). When the drawn steps leave the
    text unchanged (a short name cannot be truncated), a store number is added.
    """
    text = " ".join(text.split())
    count = rng.randint(1, 3)
    picked = set(rng.sample(range(len(_NOISE_STEPS)), count))
    out = text
    for index, step in enumerate(_NOISE_STEPS):
        if index in picked:
            out = step(out, rng)
    if out == text:
        out = _noise_store_number(out, rng)
    return out


_LONG_DIGITS_RE = re.compile(r"\d{6,}")


def raw_text_key(text: str | None) -> str:
    """The description as the bank wrote it, only lower-cased with spaces collapsed and runs of
    six or more digits masked (card, account and reference numbers). Store numbers stay.

    For baselines that read the raw text (the ``tfidf_logreg_raw`` evaluation method).
    """
    if not text:
        return ""
    return _LONG_DIGITS_RE.sub("#", " ".join(unicodedata.normalize("NFKC", text).lower().split()))
