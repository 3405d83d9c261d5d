"""The query log: durable (WAL, survives a restart), ordered, paginated, shared by CLI and dashboard."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from tcr_pipeline.bundle import load_bundle, predict_frame
from tcr_pipeline.store.querylog import (
    QUERY_LOG_ENV,
    QUERY_LOG_FILE,
    NewQuery,
    QueryLog,
    count_queries,
    log_prediction,
    model_id_for,
    queries_from_result,
    query_log_path,
    read_queries,
)

ROW = {"CDR3_alpha": "CAVNAPTGTASKLTF", "CDR3_beta": "CASSMRSAVEQYF", "Epitope": "GILGFVFTL"}


@pytest.fixture(autouse=True)
def _no_log_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(QUERY_LOG_ENV, raising=False)


def _queries(n: int, valid: bool = True) -> list[NewQuery]:
    return [
        NewQuery(
            row=i + 2,
            valid=valid,
            input={**ROW, "n": str(i)},
            output={"score": 0.25, "prediction": 0} if valid else {},
            error="" if valid else f"line {i + 2}: CDR3_beta: 'X' not a standard amino acid",
        )
        for i in range(n)
    ]


def test_an_absent_log_reads_as_empty_and_is_not_created(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite")
    assert log.count() == 0
    assert log.read() == []
    assert log.last_id() == 0
    assert not (tmp_path / "q.sqlite").exists()


def test_rows_come_back_newest_first_with_everything_logged(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite")
    first = log.log(_queries(3), "run/0001", "cli", latency_ms=12.5)
    second = log.log(_queries(1, valid=False), "run/0002", "dashboard", latency_ms=3.0)
    assert first != second
    rows = log.read(0, 10)
    assert [q.row for q in rows] == [2, 4, 3, 2]
    newest = rows[0]
    assert (newest.source, newest.model_id, newest.valid, newest.request) == (
        "dashboard",
        "run/0002",
        False,
        second,
    )
    assert newest.error.startswith("line 2: CDR3_beta")
    assert newest.output == {}
    oldest = rows[-1]
    assert oldest.input == {**ROW, "n": "0"}
    assert oldest.output == {"score": 0.25, "prediction": 0}
    assert oldest.latency_ms == 12.5
    assert oldest.time.tzinfo is not None
    assert log.count() == 4
    assert log.last_id() == newest.id


def test_pages_cover_the_log_without_overlap(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite")
    for _ in range(7):
        log.log(_queries(3), "m", "cli")
    pages = [log.read(offset, 5) for offset in range(0, 25, 5)]
    ids = [q.id for page in pages for q in page]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 1]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 21


def test_the_log_is_in_wal_mode_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    QueryLog(path).log(_queries(2), "m", "dashboard")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # a new process would open a new QueryLog on the same file: everything is still there
    reopened = QueryLog(path)
    assert reopened.count() == 2
    reopened.log(_queries(1), "m", "cli")
    assert [q.source for q in QueryLog(path).read()] == ["cli", "dashboard", "dashboard"]


def _log_many(path: str, worker: int) -> None:
    log = QueryLog(path)
    for _ in range(10):
        log.log(_queries(5), f"model-{worker}", "cli")


# The same in another process: only the query log imported (no torch), so it starts fast.
PROCESS_WRITER = """
import sys
from tcr_pipeline.store.querylog import NewQuery, QueryLog
log = QueryLog(sys.argv[1])
for _ in range(10):
    log.log([NewQuery(row=i + 2, valid=True, input={"n": str(i)}, output={}) for i in range(5)], "p", "cli")
"""


def test_threads_and_processes_can_log_at_once(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    log = QueryLog(path)
    processes = [subprocess.Popen([sys.executable, "-c", PROCESS_WRITER, str(path)]) for _ in range(2)]
    threads = [threading.Thread(target=_log_many, args=(str(path), w)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    assert log.count() == 5 * 10 * 5
    # each request's rows are contiguous and complete (one transaction per request)
    by_request: dict[str, list[int]] = {}
    for query in log.read(0, 1000):
        by_request.setdefault(query.request, []).append(query.id)
    assert len(by_request) == 50
    assert all(len(ids) == 5 and max(ids) - min(ids) == 4 for ids in by_request.values())


def test_a_prediction_result_is_logged_row_by_row(tmp_path: Path, tiny_bundle: Path, small_csv: Path) -> None:
    frame = pd.read_csv(small_csv, dtype=str, keep_default_na=False).head(4)
    frame.loc[1, "CDR3_beta"] = "CASSX1F"
    result = predict_frame(load_bundle(tiny_bundle), frame)
    queries = queries_from_result(result)
    assert [q.valid for q in queries] == [True, False, True, True]
    assert "CDR3_beta" in queries[1].error
    assert set(queries[0].output) == {"score", "prediction"}
    assert "score" not in queries[0].input
    assert queries[0].input["Epitope"] == frame.loc[0, "Epitope"]

    request = log_prediction(tmp_path, "run/0003", result, source="cli", latency_ms=4.0)
    assert count_queries(tmp_path) == 4
    logged = read_queries(tmp_path, 0, 10)
    assert {q.request for q in logged} == {request}
    assert [q.row for q in logged] == [5, 4, 3, 2]  # file lines, newest (last row) first
    assert (tmp_path / QUERY_LOG_FILE).exists()


def test_the_log_path_can_be_moved_off_a_shared_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert query_log_path(tmp_path / "store") == tmp_path / "store" / QUERY_LOG_FILE
    monkeypatch.setenv(QUERY_LOG_ENV, str(tmp_path / "local" / "q.sqlite"))
    assert query_log_path(tmp_path / "store") == tmp_path / "local" / "q.sqlite"


def test_the_logged_model_is_the_registry_id_in_use(tmp_path: Path) -> None:
    from tcr_pipeline.store import Registry, Store

    assert model_id_for(tmp_path, "best") == "best"  # nothing promoted: logged as asked
    Store(tmp_path).save_registry(Registry(current="run/0002"))
    assert model_id_for(tmp_path, "best") == "run/0002"
    assert model_id_for(tmp_path, "run/0001") == "run/0001"
    assert model_id_for(tmp_path, "models/model") == "models/model"
