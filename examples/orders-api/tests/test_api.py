"""The API against real PostgreSQL and Redis: the CI run's service containers."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from orders_api.app import app, cache


@pytest.fixture(scope="module")
def client():
    command.upgrade(Config("alembic.ini"), "head")
    with TestClient(app) as test_client:
        yield test_client


def test_health_sees_the_database_and_redis(client):
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json()["problems"] == {}


def test_an_order_is_stored_and_counted(client):
    before = client.get("/stats").json()["orders_created"]
    created = client.post("/orders", json={"item": "gadget", "quantity": 10})
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["total_cents"] == 10800
    assert client.get(f"/orders/{order['id']}").json() == order
    assert client.get("/stats").json()["orders_created"] == before + 1
    assert int(cache().get("orders-api:orders-created") or 0) == before + 1


def test_unknown_items_and_orders(client):
    assert client.post("/orders", json={"item": "sprocket", "quantity": 1}).status_code == 422
    assert client.get("/orders/999999").status_code == 404
