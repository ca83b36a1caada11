"""orders-api: a FastAPI service keeping orders in PostgreSQL and counting them in Redis."""
