"""Delivery of containerised services as Prefect flows."""
