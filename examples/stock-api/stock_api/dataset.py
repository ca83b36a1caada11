"""Loading and validating the bundled price data set."""

from __future__ import annotations

import csv
import dataclasses
import datetime
from collections import defaultdict
from pathlib import Path

DEFAULT_DATASET = Path(__file__).parent / "data" / "prices.csv"
REQUIRED_COLUMNS = ("date", "symbol", "close", "volume")


class DatasetError(ValueError):
    """The data set is malformed; the message names the file and line."""


@dataclasses.dataclass(frozen=True, slots=True)
class PriceRow:
    date: datetime.date
    symbol: str
    close: float
    volume: int


def _parse_row(row: dict[str, str], where: str) -> PriceRow:
    try:
        close = float(row["close"])
        volume = int(row["volume"])
        date = datetime.date.fromisoformat(row["date"])
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    symbol = row["symbol"].strip().upper()
    if not symbol:
        raise DatasetError(f"{where}: empty symbol")
    if close <= 0:
        raise DatasetError(f"{where}: close must be positive, got {close}")
    if volume < 0:
        raise DatasetError(f"{where}: volume must not be negative, got {volume}")
    return PriceRow(date=date, symbol=symbol, close=close, volume=volume)


def load(path: Path = DEFAULT_DATASET) -> dict[str, list[PriceRow]]:
    """Rows per symbol, each list sorted by date; duplicate (symbol, date) pairs are refused."""
    by_symbol: dict[str, list[PriceRow]] = defaultdict(list)
    seen: set[tuple[str, datetime.date]] = set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            parsed = _parse_row(row, f"{path}:{line}")
            if (parsed.symbol, parsed.date) in seen:
                raise DatasetError(f"{path}:{line}: duplicate {parsed.symbol} on {parsed.date}")
            seen.add((parsed.symbol, parsed.date))
            by_symbol[parsed.symbol].append(parsed)
    return {symbol: sorted(rows, key=lambda r: r.date) for symbol, rows in by_symbol.items()}
