import pytest

from orders_api.pricing import UnknownItem, total_cents, unit_cents


@pytest.mark.parametrize(
    ("quantity", "expected"), [(1, 250), (9, 2250), (10, 2250), (11, 2475)]
)
def test_totals_with_the_bulk_discount(quantity, expected):
    assert total_cents(250, quantity) == expected


def test_a_quantity_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        total_cents(250, 0)


def test_an_unknown_item_names_the_known_ones():
    with pytest.raises(UnknownItem, match="widget"):
        unit_cents("sprocket")
