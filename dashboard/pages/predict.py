"""Predict: paste rows in the paper's CSV format, choose a model, get a score and a yes/no per row.

Every answered row, valid or not, goes to the query log (the Queries page).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard.components import changed, column, data_grid, dropdown_control, model_options, note
from dashboard.data import Dashboard
from dashboard.prediction import Limits, TableError, answer_rows, answers_frame, parse_table, rows_to_csv
from tcr_pipeline.errors import InputError
from tcr_pipeline.store.run_data import example_rows

PATH = "/predict"
NAME = "Predict"
EXAMPLE_ROWS = 10


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Predict binding"),
            html.P(
                [
                    "Rows in the paper's CSV format with a header: ",
                    html.Code(
                        "CDR3_alpha,CDR3_beta,V_alpha,V_beta,J_alpha,J_beta,Epitope,clone_id,MHC,Label"
                    ),
                    " (clone_id and Label may be empty or left out).",
                ]
            ),
            html.Div(
                [
                    dropdown_control("model", "predict-model", wide=True),
                    html.Button(
                        "Example rows", id="predict-example", n_clicks=0, className="button secondary"
                    ),
                    html.Button("Predict", id="predict-submit", n_clicks=0, className="button"),
                ],
                className="controls",
            ),
            dcc.Textarea(id="predict-input", value="", className="csv-input", spellCheck=False),
            html.Div(id="predict-limits", className="hint"),
            html.Div(id="predict-message"),
            html.Div(id="predict-results"),
        ]
    )


def example_text(
    ctx: Dashboard, model_id: str | None, seed: int | None = None
) -> tuple[str | None, Component | None]:
    """Ten test-split rows decoded by the encoder, as CSV, or None and why not."""
    entry = ctx.entry(model_id)
    if entry is None:
        return None, note("No model registered yet.", "warning")
    prepared, why = ctx.prepared_for(entry)
    if prepared is None:
        return None, note(f"No example rows: {why}.", "warning")
    return rows_to_csv(example_rows(prepared, EXAMPLE_ROWS, seed)), None


def predict_text(ctx: Dashboard, text: str, model_id: str | None) -> tuple[Component, Component | None]:
    """Answer pasted rows and log them; returns the message and the results table."""
    started = time.perf_counter()
    entry = ctx.entry(model_id)
    if entry is None:
        why = f"model {model_id} is no longer registered" if model_id else "no model registered yet"
        return note(f"Cannot predict: {why}.", "error", id="predict-error"), None
    limits = Limits(max_rows=ctx.max_rows, max_bytes=ctx.max_bytes)
    try:
        parsed = parse_table(text or "", limits)
        bundle = ctx.models.get(entry)
        answers = answer_rows(bundle, parsed)
    except TableError as exc:
        return note(str(exc), "error", id="predict-error"), None
    except (InputError, OSError) as exc:
        return note(f"model {entry.model_id} cannot be used: {exc}", "error", id="predict-error"), None
    latency_ms = (time.perf_counter() - started) * 1000
    unlogged = ""
    try:
        ctx.queries.log([a.as_query() for a in answers], entry.model_id, "dashboard", latency_ms)
    except (sqlite3.Error, OSError) as exc:  # the answer still counts; say that it was not logged
        unlogged = f"; not written to the query log ({exc})"
    invalid = sum(not a.valid for a in answers)
    frame = answers_frame(answers)
    summary = (
        f"{len(answers) - invalid} of {len(answers)} rows scored with {entry.model_id} "
        f"in {latency_ms:.0f} ms"
        + (f"; {invalid} invalid (see the message column)" if invalid else "")
        + unlogged
    )
    warned = sum(bool(a.warning) for a in answers)
    if warned:
        summary += f"; {warned} with a warning (highlighted: the model never saw part of the row in training)"
    results = results_grid(frame)
    kind = "warning" if invalid or unlogged or warned else "info"
    return note(summary, kind, id="predict-summary"), results


def results_grid(frame: pd.DataFrame) -> Component:
    """The answers as a grid, the answer before the input; a row's warning highlighted, invalid
    rows red, binding rows blue."""
    numeric = {"line", "score"}
    # the answer first (score, yes/no, warning, message), then what was asked
    first = [c for c in ("line", "score", "binding", "warning", "message") if c in frame.columns]
    columns = []
    for name in [*first, *(c for c in frame.columns if c not in first)]:
        extra: dict[str, Any] = {}
        if name == "warning":
            extra = {
                "cellClassRules": {"cell-warning": "params.value"},
                "tooltipField": "warning",
                "minWidth": 200,
            }
        if name == "message":
            extra = {"tooltipField": "message", "minWidth": 200}
        columns.append(column(name, name, name in numeric, **extra))
    rows: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[assignment]
    for row in rows:
        row["score"] = float(row["score"]) if row["score"] else None
    return data_grid(
        "predict-table",
        columns,
        rows,
        row_id="line",
        file_name="predictions.csv",
        row_classes={
            "row-invalid": "params.data.message !== 'ok'",
            "row-binding": "params.data.binding === 'yes'",
        },
    )


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("predict-model", "options"),
        Output("predict-model", "value"),
        Output("predict-limits", "children"),
        Input("store-version", "data"),
        State("predict-model", "value"),
    )
    def update_models(_: int, selected: str | None) -> tuple[list[Any], Any, str]:
        current = ctx.reader.registry().current
        options, value = model_options(ctx.predict_choices(), current, selected, "current best")
        return (
            options,
            changed(value, selected),
            f"At most {ctx.max_rows:,} rows and {ctx.max_bytes // 1024:,} KiB per query.",
        )

    @app.callback(
        Output("predict-input", "value"),
        Output("predict-message", "children", allow_duplicate=True),
        Input("predict-example", "n_clicks"),
        State("predict-model", "value"),
        prevent_initial_call=True,
    )
    def fill_example(_: int, model_id: str | None) -> tuple[Any, Any]:
        text, problem = example_text(ctx, model_id)
        return (text if text is not None else no_update), problem

    @app.callback(
        Output("predict-message", "children"),
        Output("predict-results", "children"),
        Input("predict-submit", "n_clicks"),
        State("predict-input", "value"),
        State("predict-model", "value"),
        prevent_initial_call=True,
    )
    def submit(_: int, text: str | None, model_id: str | None) -> tuple[Component, Component | None]:
        return predict_text(ctx, text or "", model_id)
