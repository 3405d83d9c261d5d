"""Queries: the query log, newest first, a page at a time (dashboard and ``predict --log`` alike)."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard.components import column, data_grid, grid_value, note
from dashboard.data import Dashboard
from tcr_pipeline.store.querylog import INPUT_COLUMNS, Query

PATH = "/queries"
NAME = "Queries"
PAGE_SIZE = 25


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


def input_fields(queries: list[Query]) -> list[str]:
    """The input columns to show: the paper's columns in order, then any other logged keys."""
    extra: dict[str, None] = {}
    for q in queries:
        extra.update(dict.fromkeys(k for k in q.input if k not in INPUT_COLUMNS))
    return [*INPUT_COLUMNS, *extra]


def describe_output(query: Query) -> str:
    if not query.valid:
        return query.error
    score = query.output.get("score")
    binding = "binds" if query.output.get("prediction") else "does not bind"
    return f"{score:.4f} ({binding})" if isinstance(score, float) else binding


def query_row(query: Query) -> dict[str, Any]:
    """One logged query as a grid row: each input column its own cell."""
    score = query.output.get("score")
    return {
        "id": query.id,
        "time": grid_value(query.time),
        "source": query.source,
        "model": query.model_id,
        "valid": "valid" if query.valid else "invalid",
        "line": query.row,
        **{f"in:{k}": v for k, v in query.input.items()},
        "score": score if isinstance(score, float) else None,
        "binds": ("yes" if query.output.get("prediction") else "no") if query.valid else "",
        "warning": str(query.output.get("warning") or ""),
        "error": query.error,
        "latency_ms": query.latency_ms,
    }


def queries_table(queries: list[Query], total: int, page: int) -> tuple[Component, str]:
    """A page of the log (a grid: every input column its own column) and the position line."""
    if total == 0:
        return note("No queries yet: use the Predict page or `tcr-pipeline predict --log`."), "no queries"
    columns = [
        column("time", "time (UTC)", pinned="left"),
        column("source", "source"),
        column("model", "model"),
        column("valid", "valid", cellClassRules={"cell-failed": "params.value === 'invalid'"}),
        column("line", "line", True),
        column("score", "score", True),
        column("binds", "binds"),
        column("warning", "warning", tooltipField="warning", cellClassRules={"cell-warning": "params.value"}),
        column("error", "error", tooltipField="error", maxWidth=420),
        {"headerName": "input", "children": [column(f"in:{f}", f) for f in input_fields(queries)]},
        column("latency_ms", "request ms", True),
    ]
    first = page * PAGE_SIZE + 1
    position = f"{first}–{first + len(queries) - 1} of {total:,} (newest first)"
    return (
        data_grid(
            "queries-log-table",
            columns,
            [query_row(q) for q in queries],
            row_id="id",
            file_name="queries.csv",
            row_classes={"row-invalid": "params.data.valid === 'invalid'"},
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
