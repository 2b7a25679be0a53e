"""Alembic environment: runs migrations on the connection handed over by `service.queue.db.migrate`, or a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import service.queue.store  # noqa: F401 - registers the sweeps table on Base.metadata
import service.scheduling.scheduler  # noqa: F401 - registers the schedules table on Base.metadata
from service.queue.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001 - sqlalchemy Connection
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as fresh:
        _run(fresh)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
