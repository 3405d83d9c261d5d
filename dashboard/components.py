"""Small pure builders of HTML components shared by the pages (tables, badges, notes, controls)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import dash_ag_grid as dag
import plotly.graph_objects as go
from dash import dcc, html, no_update
from dash.development.base_component import Component

from dashboard.data import Reference
from tcr_pipeline.metrics import HEADLINE_METRICS as HEADLINE
from tcr_pipeline.store import RegistryEntry

CURVE_METRICS = {  # the per-epoch curves a page can plot
    "val_roc_auc": "validation ROC-AUC",
    "val_mean_epitope_auc": "validation mean epitope AUC",
    "val_precision": "validation precision",
    "val_recall": "validation recall",
    "val_accuracy": "validation accuracy",
    "val_paper_objective": "validation paper objective",
}


def changed(new: Any, old: Any) -> Any:
    """``new``, or ``no_update`` when it equals ``old``: an unchanged selection must not make the
    callbacks that depend on it run again on every refresh."""
    return no_update if new == old else new


def fmt(value: Any, digits: int = 4) -> str:
    """A cell's text: floats rounded, NaN and None as a dash, times to the minute."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    id: str | None = None,
    row_class: Sequence[str] | None = None,
) -> html.Table:
    """A plain HTML table; cells that are components are kept, other values formatted."""
    body = []
    for i, row in enumerate(rows):
        cells = [html.Td(c if isinstance(c, Component) else fmt(c)) for c in row]
        body.append(html.Tr(cells, className=row_class[i] if row_class else None))
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Table(
        [html.Thead(html.Tr([html.Th(c) for c in columns])), html.Tbody(body)], className="table", **kwargs
    )


def key_values(pairs: Mapping[str, Any]) -> html.Table:
    """A two-column table of names and values."""
    return html.Table(
        html.Tbody(
            [
                html.Tr([html.Th(k), html.Td(v if isinstance(v, Component) else fmt(v))])
                for k, v in pairs.items()
            ]
        ),
        className="table kv",
    )


def metrics_table(metrics: Mapping[str, Mapping[str, float]], id: str | None = None) -> html.Table:
    """The headline metrics, one column per split (``{"val": {...}, "test": {...}}``)."""
    splits = [s for s in metrics if metrics[s]]
    rows = [[name, *(metrics[s].get(name) for s in splits)] for name in HEADLINE]
    return table(["metric", *splits], rows, id=id)


def badge(status: str) -> html.Span:
    """A coloured status label."""
    return html.Span(status, className=f"badge badge-{status}")


def note(text: str, kind: str = "info", id: str | None = None) -> html.Div:
    """A one-line message box (``info``, ``warning`` or ``error``)."""
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div(text, className=f"note note-{kind}", **kwargs)


def progress(done: int, total: int) -> html.Span:
    """``done/total`` with a bar."""
    return html.Span(
        [html.Progress(value=str(done), max=str(max(total, 1))), html.Span(f" {done}/{total}")],
        className="progress",
    )


def graph(id: str | None = None, figure: go.Figure | None = None) -> dcc.Graph:
    """A graph without the plotly logo in its toolbar."""
    kwargs: dict[str, Any] = {"id": id} if id else {}
    if figure is not None:
        kwargs["figure"] = figure
    return dcc.Graph(config={"displaylogo": False}, **kwargs)


GRID_THEME = "ag-theme-alpine"
ROW_ID = "row_id"  # the field every grid row carries its id in (not a column)
NUMBER_FORMAT = {"function": "params.value == null ? '–' : d3.format('.4~f')(params.value)"}


def grid_value(value: Any) -> Any:
    """A cell value the grid can sort and filter: numbers stay numbers (NaN as empty), times as
    text to the second, everything else as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


def column(field: str, header: str | None = None, numeric: bool = False, **extra: Any) -> dict[str, Any]:
    """One grid column: numbers right-aligned, rounded for display (the CSV export keeps every
    digit) and filtered as numbers."""
    spec: dict[str, Any] = {"field": field, "headerName": header or field}
    if numeric:
        spec.update(
            filter="agNumberColumnFilter",
            type="rightAligned",
            valueFormatter=NUMBER_FORMAT,
            useValueFormatterForExport=False,
        )
    spec.update(extra)
    return spec


def with_row_ids(rows: Sequence[Mapping[str, Any]], field: str) -> list[dict[str, Any]]:
    """Copies of ``rows`` carrying ``field`` as their string id (AG Grid wants strings, and
    dash-ag-grid's expressions are not full JavaScript: no ``String(...)``)."""
    return [{**r, ROW_ID: str(r[field])} for r in rows]


def data_grid(
    id: str,
    columns: Sequence[dict[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    *,
    row_id: str | None = None,
    selectable: bool = False,
    file_name: str | None = None,
    row_classes: Mapping[str, str] | None = None,
    height: int | None = None,
    pagination: bool = False,
    text_ids: bool = False,
) -> dag.AgGrid:
    """An AG Grid table (community edition): every column sortable, filterable (a filter row
    under the headers) and resizable; ``row_id`` names the field that identifies a row (the
    selection survives a refresh); ``selectable`` adds checkboxes for multi-row selection;
    ``file_name`` is what the grid's own CSV export saves; ``row_classes`` maps a CSS class to a
    JavaScript condition on ``params.data``; ``text_ids``: the ``row_id`` field is already text
    (an identifier: dash-ag-grid's expressions take only ``params.data.NAME``)."""
    options: dict[str, Any] = {
        "suppressFieldDotNotation": True,  # hyperparameter names such as "model.kind" are flat keys
        "animateRows": False,
        "enableCellTextSelection": True,
        "tooltipShowDelay": 300,
        # every column rendered: "autoSize" sizes only rendered columns (the grids are small)
        "suppressColumnVirtualisation": True,
    }
    if selectable:
        options["rowSelection"] = {"mode": "multiRow", "enableClickSelection": False}
    if height is None:
        options["domLayout"] = "autoHeight"
    if pagination:
        options.update(pagination=True, paginationPageSize=50, paginationPageSizeSelector=[25, 50, 100, 500])
    kwargs: dict[str, Any] = {}
    if row_id and text_ids:  # the field already holds text: it is the id
        rows = [dict(r) for r in rows]
        kwargs["getRowId"] = f"params.data.{row_id}"
    elif row_id:
        rows = with_row_ids(rows, row_id)
        kwargs["getRowId"] = f"params.data.{ROW_ID}"
    else:
        rows = [dict(r) for r in rows]
    if file_name:
        kwargs["csvExportParams"] = {"fileName": file_name, "skipColumnGroupHeaders": True}
    if row_classes:
        kwargs["rowClassRules"] = dict(row_classes)
    return dag.AgGrid(
        id=id,
        columnDefs=list(columns),
        rowData=rows,
        defaultColDef={
            "sortable": True,
            "filter": True,
            "floatingFilter": True,
            "resizable": True,
            "minWidth": 90,
        },
        dashGridOptions=options,
        columnSize="autoSize",
        className=GRID_THEME,
        style={"height": f"{height}px"} if height else {"height": None},
        **kwargs,
    )


def objective_metric(objective_name: str) -> str:
    """The headline metric an objective is (``paper`` is ``paper_objective``)."""
    return "paper_objective" if objective_name == "paper" else objective_name


def reference_block(
    ref: Reference, objective_name: str, interval: Mapping[str, Any] | None = None, id: str | None = None
) -> html.Div:
    """The model's metrics on one split beside the k-mer baseline's and always-negative's, with
    a one-line verdict on the objective's metric (and the promotion's interval when recorded)."""
    rows = ref.rows()
    body = []
    for row in rows:
        delta = row["delta"]
        cls = None if delta is None or delta == 0 else ("better" if delta > 0 else "worse")
        body.append(
            html.Tr(
                [
                    html.Td(row["metric"]),
                    html.Td(fmt(row["model"])),
                    html.Td(fmt(row["baseline"])),
                    html.Td(fmt(row["always_negative"])),
                    html.Td(f"{delta:+.4f}" if delta is not None else "–", className=cls),
                ]
            )
        )
    header = ["metric", "model", "k-mer baseline", "always negative", "model − baseline"]
    table_ = html.Table(
        [html.Thead(html.Tr([html.Th(c) for c in header])), html.Tbody(body)], className="table"
    )
    metric = objective_metric(objective_name)
    chosen = next((r for r in rows if r["metric"] == metric), None)
    if ref.baseline is None:
        verdict = html.Div(
            "No k-mer baseline stored for this run (runs before the baseline task, or it has not finished).",
            className="verdict",
        )
    elif chosen is None or chosen["delta"] is None:
        verdict = html.Div(f"{metric}: no value to compare", className="verdict")
    else:
        beats = chosen["delta"] > 0
        verdict = html.Div(
            f"{'Beats' if beats else 'Does not beat'} the k-mer baseline on {ref.split} {metric}: "
            f"{fmt(chosen['model'])} against {fmt(chosen['baseline'])} ({chosen['delta']:+.4f}).",
            className=f"verdict {'better' if beats else 'worse'}",
        )
    parts: list[Any] = [verdict]
    if interval is not None:
        resamples = f", {interval['resamples']:,} bootstrap resamples" if interval.get("resamples") else ""
        parts.append(
            html.Div(
                f"At promotion: Δ {interval['metric']} = {interval['delta']:+.4f} "
                f"(interval {interval['low']:+.4f} to {interval['high']:+.4f}{resamples}).",
                className="hint",
            )
        )
    parts.append(table_)
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div(parts, **kwargs)


def dropdown_control(label: str, id: str, wide: bool = False, **options: Any) -> html.Label:
    """A labelled dropdown that always holds a value (``options``: ``options=``, ``value=`` …)."""
    return html.Label(
        [label, dcc.Dropdown(id=id, clearable=False, **options)],
        className="control wide" if wide else "control",
    )


def curve_metric_control(label: str, id: str) -> html.Label:
    """A dropdown of the per-epoch curve metrics, validation ROC-AUC first."""
    options = [{"label": v, "value": k} for k, v in CURVE_METRICS.items()]
    return dropdown_control(label, id, options=options, value="val_roc_auc")


def model_options(
    entries: Sequence[RegistryEntry], current: str | None, selected: str | None, current_label: str
) -> tuple[list[dict[str, str]], str | None]:
    """Dropdown options for ``entries`` (``current`` marked ``current_label``) and the value to show:
    the selection while offered, else the current model, else the first entry."""
    marks = {current: f", {current_label}"}
    options = [
        {"label": f"{e.model_id} ({e.objective:.3f}{marks.get(e.model_id, '')})", "value": e.model_id}
        for e in entries
    ]
    ids = [e.model_id for e in entries]
    for choice in (selected, current):
        if choice in ids:
            return options, choice
    return options, ids[0] if ids else None
