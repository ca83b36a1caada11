"""Summary statistics of a price series. Pure functions over plain numbers."""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Sequence

TRADING_DAYS_PER_YEAR = 252


@dataclasses.dataclass(frozen=True, slots=True)
class PriceSummary:
    count: int
    mean: float
    median: float
    minimum: float
    maximum: float
    volatility: float  # standard deviation of daily returns
    annualized_volatility: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean": round(self.mean, 4),
            "median": round(self.median, 4),
            "min": self.minimum,
            "max": self.maximum,
            "volatility": round(self.volatility, 6),
            "annualized_volatility": round(self.annualized_volatility, 6),
        }


def daily_returns(closes: Sequence[float]) -> list[float]:
    """Simple returns between consecutive closes: (p[i] - p[i-1]) / p[i-1]."""
    if any(price <= 0 for price in closes):
        raise ValueError("prices must be positive to compute returns")
    return [(today - yesterday) / yesterday for yesterday, today in itertools.pairwise(closes)]


def volatility(closes: Sequence[float]) -> float:
    """Sample standard deviation of daily returns; 0.0 with fewer than two returns."""
    returns = daily_returns(closes)
    return statistics.stdev(returns) if len(returns) >= 2 else 0.0


def summarize(closes: Sequence[float]) -> PriceSummary:
    if not closes:
        raise ValueError("cannot summarize an empty price series")
    daily = volatility(closes)
    return PriceSummary(
        count=len(closes),
        mean=statistics.fmean(closes),
        median=statistics.median(closes),
        minimum=min(closes),
        maximum=max(closes),
        volatility=daily,
        annualized_volatility=daily * math.sqrt(TRADING_DAYS_PER_YEAR),
    )
