from pathlib import Path

import pytest

from stock_api.dataset import DEFAULT_DATASET, DatasetError, load

pytestmark = pytest.mark.dataset


def test_bundled_dataset_loads_every_symbol():
    """The bundled CSV has five symbols with 120 trading days each."""
    data = load()
    assert sorted(data) == ["ACME", "GLBX", "INIT", "UMBR", "WAYNE"]
    assert {len(rows) for rows in data.values()} == {120}


def test_bundled_dataset_is_sorted_and_has_no_weekends():
    """Rows are in date order and fall on trading days only."""
    for rows in load().values():
        dates = [row.date for row in rows]
        assert dates == sorted(dates)
        assert all(day.weekday() < 5 for day in dates)


def test_bundled_dataset_prices_are_positive():
    """Every close and volume in the shipped file is usable."""
    for rows in load().values():
        assert all(row.close > 0 and row.volume >= 0 for row in rows)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    return path


def test_missing_column_names_the_file(tmp_path):
    """A file without a required column is refused, naming the column."""
    path = write(tmp_path, "date,symbol,close\n2026-01-05,ACME,1.0\n")
    with pytest.raises(DatasetError, match="volume"):
        load(path)


def test_bad_number_names_the_line(tmp_path):
    """A close that isn't a number is refused with file and line."""
    path = write(tmp_path, "date,symbol,close,volume\n2026-01-05,ACME,abc,10\n")
    with pytest.raises(DatasetError, match=r"prices.csv:2"):
        load(path)


def test_duplicate_day_is_refused(tmp_path):
    """Two closes for one symbol on one day are ambiguous and refused."""
    text = "date,symbol,close,volume\n2026-01-05,ACME,1.0,10\n2026-01-05,acme,2.0,10\n"
    with pytest.raises(DatasetError, match="duplicate ACME"):
        load(write(tmp_path, text))


def test_negative_price_is_refused(tmp_path):
    """A non-positive close is refused."""
    with pytest.raises(DatasetError, match="positive"):
        load(write(tmp_path, "date,symbol,close,volume\n2026-01-05,ACME,-1,10\n"))


def test_default_dataset_ships_inside_the_package():
    """The CSV lives in the package, so the image has it without the network."""
    assert DEFAULT_DATASET.is_file()
    assert DEFAULT_DATASET.parent.parent.name == "stock_api"
