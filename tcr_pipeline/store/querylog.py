"""The query log: every row asked of a model, from the dashboard or ``tcr-pipeline predict --log``.

One SQLite database, by default ``<store>/queries.sqlite`` (``$TCR_QUERY_LOG`` overrides it), in
WAL mode with ``synchronous=FULL``: a committed query survives the dashboard's restart, a crash of
either process and a power loss; readers never block the writer. Every write is one
transaction, so a request's rows appear together or not at all. Each row of a request is one
query: its input (the row's columns, as JSON), whether it was valid, its output (score and
prediction, as JSON) or its error, the model, and the server time of the whole request.

SQLite's WAL needs every process on one host (shared memory): on a cluster whose store sits on
NFS, point ``$TCR_QUERY_LOG`` at a local disk of the host that runs the dashboard.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tcr_pipeline.columns import FEATURE_COLUMNS
from tcr_pipeline.files import make_dirs, share_file_with_group

if TYPE_CHECKING:  # only the frame's methods are used: importing pandas would slow a small process
    import pandas as pd

QUERY_LOG_FILE = "queries.sqlite"
QUERY_LOG_ENV = "TCR_QUERY_LOG"
OUTPUT_COLUMNS = ("score", "prediction", "error")
#: the input columns a query row shows first (any others follow in the order they came)
INPUT_COLUMNS = (*FEATURE_COLUMNS, "clone_id", "Label")
Source = Literal["dashboard", "cli"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    request     TEXT    NOT NULL,
    row         INTEGER NOT NULL,
    model_id    TEXT    NOT NULL,
    valid       INTEGER NOT NULL,
    input       TEXT    NOT NULL,
    output      TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    latency_ms  REAL
);
CREATE INDEX IF NOT EXISTS queries_request ON queries (request);
"""


@dataclass(frozen=True)
class Query:
    """One logged row: what was asked, of which model, and what came back."""

    id: int
    time: datetime
    source: str
    request: str
    row: int
    model_id: str
    valid: bool
    input: dict[str, str]
    output: dict[str, Any]
    error: str
    latency_ms: float | None


@dataclass(frozen=True)
class NewQuery:
    """A row to log (``row`` is its line in the submitted table, the header being line 1)."""

    row: int
    valid: bool
    input: dict[str, str]
    output: dict[str, Any]
    error: str = ""


def query_log_path(store_root: Path | str) -> Path:
    """Where a store's query log lives: ``$TCR_QUERY_LOG``, else ``<store>/queries.sqlite``."""
    override = os.environ.get(QUERY_LOG_ENV)
    return Path(override) if override else Path(store_root) / QUERY_LOG_FILE


class QueryLog:
    """Append and page through a query log; safe from several threads and processes at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: sqlite3 connections must not cross threads, and opening one
        # costs microseconds next to the fsync of a commit.
        if not self._ready:
            make_dirs(self.path.parent)
        connection = sqlite3.connect(self.path, timeout=30.0)
        try:
            if not self._ready:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(_SCHEMA)
                share_file_with_group(self.path)  # SQLite gives its -wal and -shm the same mode
                self._ready = True
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        finally:
            connection.close()

    def log(
        self,
        queries: Iterable[NewQuery],
        model_id: str,
        source: Source,
        latency_ms: float | None = None,
        time: datetime | None = None,
    ) -> str:
        """Append one request's rows in a single transaction; returns the request id."""
        request = uuid.uuid4().hex[:12]
        stamp = (time or datetime.now(UTC)).isoformat(timespec="milliseconds")
        rows = (  # a generator: executemany draws the rows as it inserts them
            (
                stamp,
                source,
                request,
                q.row,
                model_id,
                int(q.valid),
                json.dumps(q.input, separators=(",", ":")),
                json.dumps(q.output, separators=(",", ":")),
                q.error,
                latency_ms,
            )
            for q in queries
        )
        with self._connect() as connection, connection:
            connection.executemany(
                "INSERT INTO queries (time, source, request, row, model_id, valid, input, output, error, "
                "latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return request

    def count(self) -> int:
        """How many rows are logged (0 for a log not created yet)."""
        if not self.path.exists():
            return 0
        with self._connect() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM queries").fetchone()[0])

    def last_id(self) -> int:
        """The id of the newest row, 0 when empty: a cheap way to see whether anything was added."""
        if not self.path.exists():
            return 0
        with self._connect() as connection:
            return int(connection.execute("SELECT COALESCE(MAX(id), 0) FROM queries").fetchone()[0])

    def read(self, offset: int = 0, limit: int = 50) -> list[Query]:
        """A page of the log, newest first."""
        if not self.path.exists():
            return []
        with self._connect() as connection:
            cursor = connection.execute(
                "SELECT id, time, source, request, row, model_id, valid, input, output, error, latency_ms "
                "FROM queries ORDER BY id DESC LIMIT ? OFFSET ?",
                (max(int(limit), 0), max(int(offset), 0)),
            )
            return [_query(row) for row in cursor.fetchall()]


def _query(row: tuple[Any, ...]) -> Query:
    id_, time, source, request, line, model_id, valid, input_, output, error, latency = row
    return Query(
        id=int(id_),
        time=datetime.fromisoformat(time),
        source=str(source),
        request=str(request),
        row=int(line),
        model_id=str(model_id),
        valid=bool(valid),
        input=json.loads(input_),
        output=json.loads(output),
        error=str(error),
        latency_ms=None if latency is None else float(latency),
    )


def queries_from_result(result: pd.DataFrame, first_row: int = 2) -> list[NewQuery]:
    """One :class:`NewQuery` per row of a :func:`tcr_pipeline.bundle.predict_frame` result.

    ``first_row`` is the line of the result's first row in the submitted table (2 when the
    header is line 1 and every row was passed on).
    """
    inputs = [c for c in result.columns if c not in OUTPUT_COLUMNS]
    records: list[dict[str, Any]] = result.astype(str).to_dict("records")  # type: ignore[assignment]
    queries = []
    for position, values in enumerate(records):
        error = values.get("error", "")
        output: dict[str, Any] = {}
        if not error:
            output = {"score": float(values["score"]), "prediction": int(values["prediction"])}
        queries.append(
            NewQuery(
                row=first_row + position,
                valid=not error,
                input={c: values[c] for c in inputs},
                output=output,
                error=error,
            )
        )
    return queries


def log_queries(
    log: QueryLog,
    queries: Sequence[NewQuery],
    model_id: str,
    source: Source,
    latency_ms: float | None = None,
) -> str:
    """Append one request's rows to ``log``; returns the request id."""
    return log.log(queries, model_id, source, latency_ms)


def model_id_for(store_root: Path | str, name: str) -> str:
    """What the log records as the model: ``best`` resolved to the registry id in use, a
    registry id as it is, a bundle directory as its path."""
    from tcr_pipeline.store.file_store import Store

    if name != "best":  # a registry id or a path: the registry is not read (it may be damaged)
        return name
    registry = Store(store_root).load_registry()
    return registry.current or name


def log_prediction(
    store_root: Path | str,
    model_id: str,
    result_frame: pd.DataFrame,
    source: Source = "cli",
    latency_ms: float | None = None,
) -> str:
    """Log every row of a ``predict_frame`` result to the store's query log (what ``predict --log`` calls)."""
    log = QueryLog(query_log_path(store_root))
    return log.log(queries_from_result(result_frame), model_id, source, latency_ms)


def log_prediction_file(
    store_root: Path | str,
    model_id: str,
    scored_csv: Path | str,
    source: Source = "cli",
    latency_ms: float | None = None,
    chunk_rows: int = 50_000,
) -> tuple[str, int]:
    """Log every row of a scored CSV written by ``predict_file``, as one request; returns the
    request id and the number of rows.

    The file is read a chunk at a time and its rows are inserted as they are read, in one
    transaction (all of them or none), so logging a million rows needs the memory of one chunk.
    Rows are numbered as :func:`log_prediction` numbers them: the first is row 2.
    """
    from tcr_pipeline.data import read_table_chunks

    count = 0

    def queries() -> Iterator[NewQuery]:
        nonlocal count
        for frame in read_table_chunks(scored_csv, chunk_rows):
            yield from queries_from_result(frame, first_row=2 + count)
            count += len(frame)

    request = QueryLog(query_log_path(store_root)).log(queries(), model_id, source, latency_ms)
    return request, count


def read_queries(store_root: Path | str, offset: int = 0, limit: int = 50) -> list[Query]:
    """A page of a store's query log, newest first."""
    return QueryLog(query_log_path(store_root)).read(offset, limit)


def count_queries(store_root: Path | str) -> int:
    """How many rows a store's query log holds."""
    return QueryLog(query_log_path(store_root)).count()


__all__ = [
    "NewQuery",
    "Query",
    "QueryLog",
    "count_queries",
    "log_prediction",
    "log_prediction_file",
    "log_queries",
    "model_id_for",
    "queries_from_result",
    "query_log_path",
    "read_queries",
]
