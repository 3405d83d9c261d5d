"""The dashboard's pages, one module each, in navigation order.

Each module has ``PATH``, ``NAME``, a ``layout(**query)`` that reads nothing, and
``register_callbacks(app, ctx)`` wiring its callbacks to plain functions the tests call directly.
"""

from __future__ import annotations

from dashboard.pages import balance, models, monitoring, overview, predict, queries, training, trials

PAGES = (overview, training, trials, balance, models, predict, queries, monitoring)

__all__ = ["PAGES"]
