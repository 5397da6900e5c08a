"""Test databases: SQLite by default, PostgreSQL when QIZHI_TEST_DATABASE_URL names one.

The whole suite runs against whichever backend is chosen (``.ci/run`` runs it on both). Tests
that are only meaningful on PostgreSQL (row locks, SKIP LOCKED, real concurrency) use the
``pg_db`` fixture, which needs QIZHI_TEST_POSTGRES_URL and says so when it skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from engine import Database, Engine
from engine.models import Base

FIXTURES = Path(__file__).parent / "fixtures"
_TEMPLATES: dict[str, Path] = {}


def _reset_postgres(db: Database) -> None:
    names = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "audit_head")
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        conn.execute(text("UPDATE audit_head SET seq = 0, hash = :g"), {"g": "0" * 64})


def _postgres(url: str) -> Iterator[Database]:
    db = Database(url)
    if url not in _TEMPLATES:
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        db.upgrade()
        _TEMPLATES[url] = Path("/")
    _reset_postgres(db)
    yield db
    db.dispose()


def _sqlite(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if "sqlite" not in _TEMPLATES:
        template = tmp_path_factory.mktemp("template") / "template.db"
        made = Database(f"sqlite:///{template}")
        made.upgrade()
        made.dispose()  # checkpoints the WAL into the file we copy
        _TEMPLATES["sqlite"] = template
    path = tmp_path / "qizhi.db"
    shutil.copy(_TEMPLATES["sqlite"], path)
    db = Database(f"sqlite:///{path}")
    yield db
    db.dispose()


@pytest.fixture
def db(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = os.environ.get("QIZHI_TEST_DATABASE_URL")
    if url and url.startswith("postgresql"):
        yield from _postgres(url)
    else:
        yield from _sqlite(tmp_path, tmp_path_factory)


@pytest.fixture
def pg_db() -> Iterator[Database]:
    url = os.environ.get("QIZHI_TEST_POSTGRES_URL") or os.environ.get("QIZHI_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL: set QIZHI_TEST_POSTGRES_URL (CI sets it)")
    yield from _postgres(url)


@pytest.fixture
def engine(db: Database) -> Engine:
    from tests.directory import seed_directory

    seed_directory(db)
    return Engine(db, script_time_budget=1.0)


@pytest.fixture
def pg_engine(pg_db: Database) -> Engine:
    from tests.directory import seed_directory

    seed_directory(pg_db)
    return Engine(pg_db, script_time_budget=1.0)


pytest_plugins = ["tests.web", "tests.browser"]
