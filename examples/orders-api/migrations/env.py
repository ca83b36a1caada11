"""Alembic's entry point: migrate the database DATABASE_URL names."""

from alembic import context
from sqlalchemy import create_engine

from orders_api.db import Base
from orders_api.settings import Settings

engine = create_engine(Settings.from_env().database_url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
