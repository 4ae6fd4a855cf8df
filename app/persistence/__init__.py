"""Persistence: SQLAlchemy 2.0 async models, repositories, Alembic migrations and
``SqlExecutionStore`` (implements ``app.engine.ports.ExecutionStore`` structurally)."""

from app.persistence.database import DEFAULT_DATABASE_URL
from app.persistence.migrate import downgrade_to_base, upgrade_to_head
from app.persistence.store import SqlExecutionStore

__all__ = ["DEFAULT_DATABASE_URL", "SqlExecutionStore", "downgrade_to_base", "upgrade_to_head"]
