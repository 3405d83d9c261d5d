"""The result store: one directory shared by every host of a search, and the one typed contract
every writer and reader of it goes through (docs/store.md).

The package, by concern:

- :mod:`.layout`: names and paths of everything in a store, run and attempt ids, the lock.
- :mod:`.records`: the records, every field declared, with ``format_version``; atomic writes
  and the readers of every format (format 1: records without ``format_version``).
- :mod:`.file_store`: :class:`Store`, typed reads and writes (its docstring states the guarantees).
- :mod:`.reader`: :class:`StoreReader`, cached incremental reads for long-lived readers.
- :mod:`.summary`: the one counted-attempt rule and the one best-trial rule; run summaries.
- :mod:`.check`: damaged records, stale runs and their repair.
- :mod:`.querylog`: the query log (``queries.sqlite``).
- :mod:`.run_data`: a run's prepared data and the tables shown of it (imported on its own: torch).

Every public name of these modules but :mod:`.run_data` is importable from ``tcr_pipeline.store``.
"""

from __future__ import annotations

from tcr_pipeline.store.check import Damage, check_resume_budget, check_store, mark_stale
from tcr_pipeline.store.file_store import Store
from tcr_pipeline.store.layout import (
    BASELINE_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    REGISTRY_FILE,
    RUN_ID_PATTERN,
    RUN_ID_RULE,
    RUNS_DIR,
    STORE_ENV,
    STORE_GROUP_ENV,
    TRIAL_FILE,
    TRIALS_DIR,
    StatKey,
    check_run_id,
    model_id_of,
    new_attempt_id,
    new_run_id,
    now,
    stat_key,
)
from tcr_pipeline.store.querylog import (
    QUERY_LOG_ENV,
    QUERY_LOG_FILE,
    NewQuery,
    Query,
    QueryLog,
    count_queries,
    log_prediction,
    log_prediction_file,
    log_queries,
    model_id_for,
    queries_from_result,
    query_log_path,
    read_queries,
)
from tcr_pipeline.store.reader import ReadStats, StoreReader
from tcr_pipeline.store.records import (
    FORMAT_VERSION,
    Comparison,
    Hardware,
    Promotion,
    Record,
    Registry,
    RegistryEntry,
    RunManifest,
    RunStatus,
    TrialRecord,
    TrialStatus,
    parse_record,
    read_format_1,
    read_or_skip,
    read_record,
    write_record,
)
from tcr_pipeline.store.summary import (
    RunSummary,
    best_objective,
    best_trial,
    counted_attempt,
    ranked_trials,
    scored_trials,
    summarize_run,
)

__all__ = [
    "BASELINE_FILE",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "MODEL_DIR",
    "QUERY_LOG_ENV",
    "QUERY_LOG_FILE",
    "REGISTRY_FILE",
    "RUNS_DIR",
    "RUN_ID_PATTERN",
    "RUN_ID_RULE",
    "STORE_ENV",
    "STORE_GROUP_ENV",
    "TRIALS_DIR",
    "TRIAL_FILE",
    "Comparison",
    "Damage",
    "Hardware",
    "NewQuery",
    "Promotion",
    "Query",
    "QueryLog",
    "ReadStats",
    "Record",
    "Registry",
    "RegistryEntry",
    "RunManifest",
    "RunStatus",
    "RunSummary",
    "StatKey",
    "Store",
    "StoreReader",
    "TrialRecord",
    "TrialStatus",
    "best_objective",
    "best_trial",
    "check_resume_budget",
    "check_run_id",
    "check_store",
    "count_queries",
    "counted_attempt",
    "log_prediction",
    "log_prediction_file",
    "log_queries",
    "mark_stale",
    "model_id_for",
    "model_id_of",
    "new_attempt_id",
    "new_run_id",
    "now",
    "parse_record",
    "queries_from_result",
    "query_log_path",
    "ranked_trials",
    "read_format_1",
    "read_or_skip",
    "read_queries",
    "read_record",
    "scored_trials",
    "stat_key",
    "summarize_run",
    "write_record",
]
