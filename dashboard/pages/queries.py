"""Queries: the query log, newest first, a page at a time (dashboard and ``predict --log`` alike)."""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard.components import note, table
from dashboard.data import Dashboard
from tcr_pipeline.querylog import Query

PATH = "/queries"
NAME = "Queries"
PAGE_SIZE = 25
INPUT_FIELDS = ("CDR3_alpha", "CDR3_beta", "V_alpha", "V_beta", "J_alpha", "J_beta", "Epitope", "MHC")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Query log"),
            html.Div(
                [
                    html.Button("‹ newer", id="queries-newer", n_clicks=0, className="button secondary"),
                    html.Span(id="queries-position", className="position"),
                    html.Button("older ›", id="queries-older", n_clicks=0, className="button secondary"),
                ],
                className="controls",
            ),
            dcc.Store(id="queries-page", data=0),
            dcc.Store(id="queries-last", data=-1),
            html.Div(id="queries-table"),
        ]
    )


def describe_input(values: dict[str, str]) -> str:
    """A logged row's input in one line."""
    shown = [values.get(f, "") for f in INPUT_FIELDS]
    extra = {k: v for k, v in values.items() if k not in INPUT_FIELDS and v}
    return " ".join(shown) + (f"  {json.dumps(extra)}" if extra else "")


def describe_output(query: Query) -> str:
    if not query.valid:
        return query.error
    score = query.output.get("score")
    binding = "binds" if query.output.get("prediction") else "does not bind"
    return f"{score:.4f} ({binding})" if isinstance(score, float) else binding


def queries_table(queries: list[Query], total: int, page: int) -> tuple[Component, str]:
    """A page of the log and the position line."""
    if total == 0:
        return note("No queries yet: use the Predict page or `tcr-pipeline predict --log`."), "no queries"
    rows = [
        [
            q.time,
            q.source,
            q.model_id,
            "valid" if q.valid else "invalid",
            q.row,
            html.Code(describe_input(q.input)),
            describe_output(q),
            f"{q.latency_ms:.1f}" if q.latency_ms is not None else "–",
        ]
        for q in queries
    ]
    first = page * PAGE_SIZE + 1
    position = f"{first}–{first + len(queries) - 1} of {total:,} (newest first)"
    return (
        table(
            ["time (UTC)", "source", "model", "valid", "line", "input", "output", "request ms"],
            rows,
            id="queries-log-table",
            row_class=["" if q.valid else "invalid" for q in queries],
        ),
        position,
    )


def turn_page(page: int, total: int, step: int) -> int:
    """The page after moving ``step`` pages, kept within the log."""
    last = max((total - 1) // PAGE_SIZE, 0)
    return min(max(page + step, 0), last)


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("queries-page", "data"),
        Input("queries-newer", "n_clicks"),
        Input("queries-older", "n_clicks"),
        State("queries-page", "data"),
        prevent_initial_call=True,
    )
    def move(_: int, __: int, page: int) -> int:
        step = -1 if dash.ctx.triggered_id == "queries-newer" else 1
        return turn_page(page or 0, ctx.queries.count(), step)

    @app.callback(
        Output("queries-table", "children"),
        Output("queries-position", "children"),
        Output("queries-last", "data"),
        Input("queries-page", "data"),
        Input("refresh-interval", "n_intervals"),
        State("queries-last", "data"),
    )
    def show(page: int, _: int, last_seen: int) -> tuple[Any, Any, Any]:
        last = ctx.queries.last_id()
        if dash.ctx.triggered_id == "refresh-interval" and last == last_seen:
            return no_update, no_update, no_update  # nothing new: nothing read
        total = ctx.queries.count()
        page = turn_page(page or 0, total, 0)
        body, position = queries_table(ctx.queries.read(page * PAGE_SIZE, PAGE_SIZE), total, page)
        return body, position, last
