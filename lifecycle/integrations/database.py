"""backend=postgresql: the database checked before any heavy work, naming what is wrong and what to do.

``check(uri)`` connects the way MLflow will (psycopg, the password from PGPASSWORD) within a few seconds and tells
apart: a server that cannot be reached, credentials it refuses, a database that does not exist, and a schema older
than this MLflow's (with the ``mlflow db upgrade`` command). An empty database is fine: MLflow creates its tables.
A password written into the URL is refused: it would end up in logs and process lists.
"""

from __future__ import annotations

from lifecycle.stage import StageError

CONNECT_TIMEOUT_S = 3


def _parts(uri: str):
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.password:
        raise StageError(
            "the database URL carries a password: remove it and export PGPASSWORD instead (PostgreSQL's clients "
            "read it), so that it never reaches a log, a process list or an MLflow run"
        )
    return url


def _explain(exc: Exception, url) -> str:
    text = str(exc)
    where = f"PostgreSQL at {url.host}:{url.port or 5432}"
    if "password authentication failed" in text or "no password supplied" in text:
        return (
            f"{where} refused user {url.username!r}: export PGPASSWORD with that user's password "
            "(the one `make postgres` was started with)"
        )
    if "does not exist" in text and "database" in text:
        return (
            f"database {url.database!r} does not exist on {where}: create it "
            f"(`createdb -h {url.host} -p {url.port or 5432} -U {url.username} {url.database}`), or start a local "
            "server that creates it: `make postgres`"
        )
    if "permission denied" in text:
        return (
            f"{where}: user {url.username!r} may not use what database {url.database!r} holds "
            f"({text.splitlines()[0]}): connect as the user that owns MLflow's tables, or grant that user the rights"
        )
    if "Connection refused" in text or "timeout" in text.lower() or "could not" in text:
        return f"cannot reach {where}: is it running? `make postgres` starts a local one (backend.port=... if not 5432)"
    return f"{where}: {text.splitlines()[0] if text else type(exc).__name__}"


def latest_schema() -> str:
    """The schema revision this MLflow's tracking store expects."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def check(uri: str) -> None:
    import psycopg

    url = _parts(uri)
    try:
        address = {"host": url.host, "port": url.port or 5432, "user": url.username, "dbname": url.database}
        with psycopg.connect(**address, connect_timeout=CONNECT_TIMEOUT_S) as connection:
            found = connection.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()[0]
            current = connection.execute("SELECT version_num FROM alembic_version").fetchone() if found else None
    except psycopg.Error as exc:
        raise StageError(_explain(exc, url)) from None
    if current and current[0] != (expected := latest_schema()):
        raise StageError(
            f"the database {url.database!r} holds MLflow's schema at revision {current[0]}, and this MLflow needs "
            f"{expected}: back it up, then run `mlflow db upgrade {url.render_as_string(hide_password=True)}` "
            "with PGPASSWORD set"
        )
