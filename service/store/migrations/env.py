"""Alembic environment: runs migrations against the URL the caller configured."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from service.store.database import metadata

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be configured"

connectable = create_engine(url)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
