"""What an order costs. Pure."""

from __future__ import annotations

PRICES_CENTS = {"widget": 250, "gadget": 1200, "gizmo": 4999}
BULK_QUANTITY = 10
BULK_DISCOUNT_PERCENT = 10


class UnknownItem(ValueError):
    pass


def unit_cents(item: str) -> int:
    try:
        return PRICES_CENTS[item]
    except KeyError:
        raise UnknownItem(f"no item called {item!r}; known: {', '.join(PRICES_CENTS)}") from None


def total_cents(unit: int, quantity: int) -> int:
    """Quantity times unit price, with the bulk discount from BULK_QUANTITY on, rounded down."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    gross = unit * quantity
    if quantity >= BULK_QUANTITY:
        return gross * (100 - BULK_DISCOUNT_PERCENT) // 100
    return gross
