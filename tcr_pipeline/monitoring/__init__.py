"""Monitoring of the model in use: input drift, prediction drift, concept drift, service health.

A report compares the recent rows of the query log with the rows the model the registry marks
as current trained on, and is written to ``STORE/monitoring/<timestamp>.json``. Every
statistic, threshold and design choice is explained in ``docs/monitoring.md``. The package, one
concern a module:

- :mod:`~tcr_pipeline.store.reports` — the report and reference-profile records and where
  they live in the store;
- :mod:`~tcr_pipeline.monitoring.statistics` — what is counted, PSI, chi-square, bins (pure);
- :mod:`~tcr_pipeline.monitoring.reference` — the reference profile: built from the prepared
  data when a model is registered, read by every monitoring run;
- :mod:`~tcr_pipeline.monitoring.window` — the recent rows of the query log, service health;
- :mod:`~tcr_pipeline.monitoring.checks` — input, prediction, concept and health checks (pure);
- :mod:`~tcr_pipeline.monitoring.report` — a report from its parts, and from a store.

The report and profile records are the store's (:mod:`tcr_pipeline.store.reports`, importable
from :mod:`tcr_pipeline.store`); DVC data versions are :mod:`tcr_pipeline.dataversion`; the
dashboard's tables over reports are ``dashboard/tables.py``. Nothing here imports Prefect;
``flows/monitor.py`` wraps it.
"""

from tcr_pipeline.monitoring.checks import concept_checks, health_checks, input_checks, prediction_checks
from tcr_pipeline.monitoring.reference import build_reference, reference_profile, save_reference
from tcr_pipeline.monitoring.report import build_report, carry_since, monitor_store
from tcr_pipeline.monitoring.statistics import binned, chi_square_p, length_bins, psi
from tcr_pipeline.monitoring.window import queries_frame, recent_queries, service_health

__all__ = [
    "binned",
    "build_reference",
    "build_report",
    "carry_since",
    "chi_square_p",
    "concept_checks",
    "dvc_file_md5",
    "health_checks",
    "input_checks",
    "length_bins",
    "monitor_store",
    "prediction_checks",
    "psi",
    "queries_frame",
    "recent_queries",
    "reference_profile",
    "save_reference",
    "service_health",
]
