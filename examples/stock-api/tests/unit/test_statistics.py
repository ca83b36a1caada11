import math

import pytest

from stock_api.statistics import daily_returns, summarize, volatility

pytestmark = pytest.mark.unit


def test_summary_of_known_series():
    """Mean, median, min and max of a small series match hand-computed values."""
    summary = summarize([10.0, 12.0, 11.0, 13.0])
    assert summary.count == 4
    assert summary.mean == pytest.approx(11.5)
    assert summary.median == pytest.approx(11.5)
    assert (summary.minimum, summary.maximum) == (10.0, 13.0)


def test_daily_returns_are_relative_changes():
    """Returns are (today - yesterday) / yesterday."""
    assert daily_returns([100.0, 110.0, 99.0]) == pytest.approx([0.1, -0.1])


def test_volatility_is_sample_stdev_of_returns():
    """Volatility is the sample standard deviation of daily returns, annualized by sqrt(252)."""
    closes = [100.0, 110.0, 99.0, 99.0]
    returns = [0.1, -0.1, 0.0]
    mean = sum(returns) / 3
    expected = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    assert volatility(closes) == pytest.approx(expected)
    assert summarize(closes).annualized_volatility == pytest.approx(expected * math.sqrt(252))


def test_flat_series_has_zero_volatility():
    """A price that never moves has no volatility."""
    assert volatility([5.0, 5.0, 5.0]) == 0.0


def test_single_price_has_zero_volatility():
    """One price gives no return, so volatility is reported as zero rather than failing."""
    assert summarize([42.0]).volatility == 0.0


def test_empty_series_is_refused():
    """An empty series is an error, not a row of NaNs."""
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_non_positive_price_is_refused():
    """A zero price would divide by zero in returns; it is refused with a clear message."""
    with pytest.raises(ValueError, match="positive"):
        volatility([1.0, 0.0, 2.0])
