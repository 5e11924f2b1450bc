"""Reading labelled merchants: the twelve real Birmingham files, and synthetic edge cases."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from scale_ray.models.hypcd.data import LabelledRows, read_birmingham, read_labelled_csv
from scale_ray.settings import get_settings

BIRMINGHAM = get_settings().shared_data_path() / "birmingham_pcard_2016_2017"


@pytest.fixture(scope="module")
def birmingham() -> LabelledRows:
    if not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    return read_birmingham([BIRMINGHAM])


def test_real_folder_totals(birmingham: LabelledRows) -> None:
    # README: 51,591 rows; 49 of them have no expense code (one more line is entirely blank).
    assert len(birmingham) + birmingham.skipped == 51_591
    assert birmingham.skipped == 49
    assert len(birmingham) == 51_542
    assert len(set(birmingham.labels)) == 124
    assert Counter(birmingham.parents).most_common(3) == [("L", 28_102), ("K", 8_354), ("N", 5_013)]
    assert birmingham.names["K020"] == "Vehicle Fuel"
    assert birmingham.names["RG10"] == "Revenue Expenditure"  # "rg10" in the file
    assert set(birmingham.names) == set(birmingham.labels)
    assert all(
        label[0] == parent
        for label, parent in zip(birmingham.labels, birmingham.parents, strict=True)
    )
    assert all(d is not None for d in birmingham.dates)
    assert all(a is not None for a in birmingham.amounts_minor)


def test_real_first_rows_and_amounts(birmingham: LabelledRows) -> None:
    # First data row of purchase-card-transactions-201612.csv (the ';' format, no billing column).
    assert birmingham.texts[0] == "shell kings 587"
    assert birmingham.labels[0] == "K020"
    assert birmingham.dates[0] == date(2016, 12, 22)
    assert birmingham.amounts_minor[0] == 2000
    assert birmingham.paths()[0] == "K/K020"
    # Thousands separators parse exactly (unquoted in a ';' file, quoted in a ',' file), and
    # the billed sterling amount wins over a foreign original ("2,186.00" RON → 449.49 GBP).
    pairs = set(zip(birmingham.texts, birmingham.amounts_minor, strict=True))
    assert ("don ruffles ltd", 141_714) in pairs
    assert ("wizz air hun", 44_949) in pairs
    assert ("wizz air hun", 218_600) not in pairs
    assert 205_700 in birmingham.amounts_minor
    assert any(a is not None and a < 0 for a in birmingham.amounts_minor)  # refunds


def test_both_separators_parse() -> None:
    if not BIRMINGHAM.is_dir():
        pytest.skip(f"shared data not found at {BIRMINGHAM}")
    comma = read_birmingham([BIRMINGHAM / "purchase-card-transactions-201709.csv"])
    semicolon = read_birmingham([BIRMINGHAM / "purchase-card-transactions-201708.csv"])
    spaced = read_birmingham([BIRMINGHAM / "purchase-card-transactions-201701.csv"])  # "; "
    assert (len(comma), comma.skipped) == (4_595, 3)
    assert (len(semicolon), semicolon.skipped) == (2_304, 2)
    assert (len(spaced), spaced.skipped) == (5_224, 3)
    assert comma.texts[:2] == ["mrh six ways", "beeches road servi"]
    assert comma.amounts_minor[:2] == [5000, 6001]
    assert comma.dates[0] == date(2017, 9, 15)


def test_date_range_filter(birmingham: LabelledRows) -> None:
    # September rows sit in the 201709 and 201710 files (a file holds late-posted rows too).
    files = [BIRMINGHAM / f"purchase-card-transactions-2017{m}.csv" for m in ("09", "10")]
    september = read_birmingham(files, start=date(2017, 9, 1), end=date(2017, 9, 30))
    expected = sum(1 for d in birmingham.dates if d and date(2017, 9, 1) <= d <= date(2017, 9, 30))
    assert len(september) == expected > 4_000
    assert min(september.dates) == date(2017, 9, 1)
    assert max(september.dates) == date(2017, 9, 30)


def test_subset(birmingham: LabelledRows) -> None:
    part = birmingham.subset([5, 0, 5])
    assert len(part) == 3
    assert part.texts == [birmingham.texts[5], birmingham.texts[0], birmingham.texts[5]]
    assert set(part.names) == set(part.labels)
    assert part.paths() == [birmingham.paths()[i] for i in (5, 0, 5)]


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_synthetic_comma_file_with_extra_columns(tmp_path: Path) -> None:
    _write(
        tmp_path / "a.csv",
        " TRANS DATE , MERCHANT NAME ,EXTRA,TRANS CAC CODE 1,TRANS CAC DESC 1,"
        "ORIGINAL GROSS AMT,ORIGINAL CUR,BILLING GROSS AMT,BILLING CUR CODE\n"
        '01/02/17,café nero 12,x,l220,Purchases Food,"1,000.50",EUR,"1,234.56",GBP\n'
        "02/02/17,,x,L220,Purchases Food,1.00,GBP,1.00,GBP\n"
        "03/02/17,tesco,x,,,1.00,GBP,1.00,GBP\n"
        ",,,,,,,,\n"
        "31/12/2017,aldi,x,L220,,2.5,GBP,,GBP\n"
        "bad date,aldi,x,L220,,oops,GBP,,GBP\n",
        encoding="cp1252",
    )
    rows = read_birmingham([tmp_path / "a.csv"])
    assert rows.texts == ["café nero 12", "aldi", "aldi"]  # cp1252 decoded
    assert rows.labels == ["L220", "L220", "L220"]
    assert rows.parents == ["L", "L", "L"]
    assert rows.names == {"L220": "Purchases Food"}
    assert rows.skipped == 2
    assert rows.amounts_minor == [123_456, 250, None]  # billing first, original as fallback
    assert rows.dates == [date(2017, 2, 1), date(2017, 12, 31), None]
    assert len(read_birmingham([tmp_path], start=date(2017, 3, 1))) == 1


def test_missing_required_column_names_the_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.csv", "TRANS DATE;MERCHANT NAME;TRANS CAC DESC 1\n1/1/17;x;y\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*TRANS CAC CODE 1"):
        read_birmingham([bad])
    with pytest.raises(FileNotFoundError):
        read_birmingham([tmp_path / "absent.csv"])


def test_read_labelled_csv(tmp_path: Path) -> None:
    _write(
        tmp_path / "l.csv",
        "text;category;group\nSQ *COFFEE;Food & drink/Coffee;Food & drink\n"
        "uber;Transport/Taxi;\nshell;Fuel;Transport\n;x;y\n",
    )
    derived = read_labelled_csv([tmp_path / "l.csv"], "text", "category")
    assert derived.parents == ["Food & drink", "Transport", "Fuel"]
    assert derived.paths() == ["Food & drink/Coffee", "Transport/Taxi", "Fuel/Fuel"]
    assert derived.names["Food & drink/Coffee"] == "Coffee"
    assert derived.skipped == 1
    assert derived.dates == [None, None, None]
    explicit = read_labelled_csv([tmp_path], "TEXT", "category", parent_column="group", sep=";")
    assert explicit.texts == ["SQ *COFFEE", "shell"]  # the row with an empty group is skipped
    assert explicit.parents == ["Food & drink", "Transport"]
    assert explicit.skipped == 2
    with pytest.raises(ValueError, match=r"l\.csv.*label"):
        read_labelled_csv([tmp_path / "l.csv"], "text", "label")
