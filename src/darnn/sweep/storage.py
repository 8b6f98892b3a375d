"""Where a sweep lives: Optuna's RDB storage behind a SQLAlchemy URL, read or written.

The default is a SQLite file in the sweep directory; a PostgreSQL (or any SQLAlchemy) URL
lets workers on several machines share one study. Reading never writes: a SQLite file is
opened read-only and a database without Optuna's tables is reported as holding no study.
Optuna is imported only through ``import_optuna``, so ``darnn`` works without the extra.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import RunError

STUDY_DB = "study.db"
INSTALL_HINT = "pip install -e '.[sweep]'"
CREATE_RETRIES = 4  # opening a new database while another process creates its tables


class SweepError(RunError):
    """A sweep cannot start or its storage cannot be used; the message says what to do."""


def import_optuna() -> Any:
    """The optuna module; SweepError saying how to install it when it is missing."""
    try:
        import optuna
    except ImportError:
        raise SweepError(
            f"darnn sweep needs Optuna, which is not installed; install the sweep extra: "
            f"{INSTALL_HINT} (in the darnn checkout)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # darnn prints its own trial lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(value: str | None, out_dir: Path) -> str:
    """A SQLAlchemy URL: the default SQLite file in ``out_dir``, or a path taken as SQLite."""
    if value is None:
        return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"
    if "://" not in value:
        return f"sqlite:///{Path(value).resolve()}"
    return value


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported by read_storage
        return url


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for the database at ``url`` (lock and connect timeouts)."""
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "sqlite":  # several processes write: wait for the lock instead of failing
        return {"connect_args": {"timeout": 60}}
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {"pool_pre_ping": True}


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise SweepError(
            f"storage {url} is an in-memory SQLite database, which worker processes cannot "
            "share; give a file, e.g. --storage sqlite:///sweeps/NAME/study.db"
        )
    return Path(parsed.database)


def reading(url: str) -> tuple[str, dict[str, Any]]:
    """URL and engine arguments that read ``url`` without writing to it.

    A SQLite file is opened read-only through an SQLite URI (built here, so that no URL
    parser decodes the file name on the way: '#', '?' and '%' stay part of it).
    """
    path = sqlite_path(url)
    if path is None:
        return url, engine_kwargs(url)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return "sqlite://", {"creator": functools.partial(sqlite3.connect, uri, uri=True, timeout=60)}


@dataclass
class StoredStudy:
    """What a storage holds, read without writing anything."""

    names: list[str]
    user_attrs: dict[str, Any] | None  # of the requested study; None if it does not exist


def read_storage(url: str, study_name: str | None) -> StoredStudy:
    """Connect to ``url`` and read the studies it holds, writing nothing (not even tables).

    A SQLite file that does not exist yet holds no study; it is not created here.
    """
    optuna = import_optuna()
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    try:
        path = sqlite_path(url)
    except sa_exc.ArgumentError as exc:
        raise SweepError(
            f"--storage {url!r} is not a valid database URL ({exc}); give a SQLAlchemy URL "
            "such as sqlite:///sweeps/NAME/study.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from None
    if path is not None and not path.exists():
        return StoredStudy([], None)
    read_url, read_kwargs = reading(url)
    try:
        engine = sqlalchemy.create_engine(read_url, **read_kwargs)
        try:
            with engine.connect() as connection:
                tables = set(sqlalchemy.inspect(connection).get_table_names())
        finally:
            engine.dispose()
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise SweepError(
            f"no database driver for storage {shown_url(url)} ({exc}); PostgreSQL needs "
            f"psycopg, which the sweep extra installs: {INSTALL_HINT}"
        ) from None
    except sa_exc.SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise SweepError(
            f"cannot reach the storage {shown_url(url)}: {reason}. Check the URL, that the "
            "database server is running and reachable from this machine, and the credentials."
        ) from None
    if "studies" not in tables or "version_info" not in tables:
        return StoredStudy([], None)
    try:
        storage = read_only_storage(url)
        try:
            names = list(optuna.get_all_study_names(storage))
            attrs = None
            if study_name in names:
                attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
        finally:
            storage.engine.dispose()
    except (RuntimeError, sa_exc.SQLAlchemyError) as exc:
        reason = " ".join(str(exc).split())
        raise SweepError(
            f"storage {shown_url(url)} holds tables that this Optuna "
            f"({optuna.__version__}) cannot read: {reason}"
        ) from None
    return StoredStudy(names, attrs)


def read_only_storage(url: str) -> Any:
    """Optuna's RDB storage for an existing study in ``url``, opened as ``reading`` does."""
    optuna = import_optuna()
    read_url, read_kwargs = reading(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.storages.RDBStorage(
            read_url, engine_kwargs=read_kwargs, skip_table_creation=True
        )


def make_storage(
    url: str, heartbeat: int | None = None, on_stale: Callable[[Any, Any], None] | None = None
) -> Any:
    """Optuna's RDB storage for ``url``; with heartbeats when a worker will run trials.

    ``on_stale(study, trial)`` is called for a trial whose worker stopped sending them.
    """
    optuna = import_optuna()
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = {"heartbeat_interval": heartbeat, "heartbeat_stale_trial_callback": on_stale}
    from sqlalchemy import exc as sa_exc

    # Two processes that open a new database at once both create Optuna's tables; the loser's
    # insert fails (UNIQUE alembic_version, table exists). The tables are there on a retry.
    def open_storage() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)

    for attempt in range(CREATE_RETRIES - 1):
        try:
            return open_storage()
        except (sa_exc.IntegrityError, sa_exc.OperationalError):
            time.sleep(0.2 * (attempt + 1))
    return open_storage()


__all__ = [
    "INSTALL_HINT",
    "STUDY_DB",
    "StoredStudy",
    "SweepError",
    "engine_kwargs",
    "import_optuna",
    "make_storage",
    "read_only_storage",
    "read_storage",
    "reading",
    "shown_url",
    "sqlite_path",
    "storage_url",
]
