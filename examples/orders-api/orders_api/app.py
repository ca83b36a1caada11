"""The HTTP API: orders in PostgreSQL, a count of them in Redis."""

from __future__ import annotations

from functools import lru_cache

import redis
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from orders_api.db import Order, session_factory
from orders_api.pricing import UnknownItem, total_cents, unit_cents
from orders_api.settings import Settings

COUNTER = "orders-api:orders-created"
app = FastAPI(title="orders-api")


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def sessions() -> sessionmaker:
    return session_factory(settings().database_url)


@lru_cache(maxsize=1)
def cache() -> redis.Redis:
    return redis.Redis.from_url(settings().redis_url, socket_timeout=2)


class NewOrder(BaseModel):
    item: str = Field(min_length=1, max_length=80)
    quantity: int = Field(ge=1, le=1000)


def _order_json(order: Order) -> dict[str, object]:
    return {
        "id": order.id,
        "item": order.item,
        "quantity": order.quantity,
        "total_cents": total_cents(order.unit_cents, order.quantity),
    }


@app.get("/health")
def health() -> JSONResponse:
    problems = {}
    try:
        with sessions()() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure is what health reports
        problems["database"] = type(exc).__name__
    try:
        cache().ping()
    except Exception as exc:  # noqa: BLE001
        problems["redis"] = type(exc).__name__
    body = {
        "status": "degraded" if problems else "ok",
        "version": settings().version,
        "git_sha": settings().git_sha,
        "problems": problems,
    }
    return JSONResponse(body, status_code=503 if problems else 200)


@app.post("/orders", status_code=201)
def create_order(new: NewOrder) -> dict[str, object]:
    try:
        unit = unit_cents(new.item)
    except UnknownItem as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    with sessions()() as session, session.begin():
        order = Order(item=new.item, quantity=new.quantity, unit_cents=unit)
        session.add(order)
    cache().incr(COUNTER)
    return _order_json(order)


@app.get("/orders/{order_id}")
def read_order(order_id: int) -> dict[str, object]:
    with sessions()() as session:
        order = session.get(Order, order_id)
    if order is None:
        raise HTTPException(status_code=404, detail=f"no order {order_id}")
    return _order_json(order)


@app.get("/stats")
def stats() -> dict[str, int]:
    return {"orders_created": int(cache().get(COUNTER) or 0)}
