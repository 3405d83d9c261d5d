"""Trials: every trial of every run in one grid (any metric and hyperparameter a column: sort,
filter, pin, CSV export, selection); the selected trials compared; per run, parallel
coordinates of the hyperparameters against the objective and their permutation importance."""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import dash
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from dashboard import figures
from dashboard.components import (
    changed,
    column,
    curve_metric_control,
    data_grid,
    dropdown_control,
    graph,
    grid_value,
    note,
)
from dashboard.data import (
    Dashboard,
    Importance,
    all_trial_rows,
    always_negative,
    hyperparameter_importance,
    positive_rate,
    trial_key,
)
from dashboard.pages.training import run_options, trials_frame
from tcr_pipeline.metrics import HEADLINE_METRICS
from tcr_pipeline.store import TrialRecord

PATH = "/trials"
NAME = "Trials"
GRID_HEIGHT = 460
ALWAYS_PINNED = ("key",)
COMPARE_METRICS = ("precision", "recall", "roc_auc", "average_precision", "mean_epitope_auc")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Every trial of every run"),
            html.P(
                "Sort by clicking a header, filter in the row under it, drag a column's edge to "
                "resize it; metric groups open with the arrow in their header. Tick trials (across "
                "runs) to compare them below; the CSV holds the rows as filtered and sorted.",
                className="hint",
            ),
            html.Div(
                [
                    html.Label(
                        [
                            "pin columns",
                            dcc.Dropdown(id="trials-pin", multi=True, placeholder="e.g. objective"),
                        ],
                        className="control wide",
                    ),
                    html.Button("Download CSV", id="trials-csv", n_clicks=0, className="button secondary"),
                ],
                className="controls",
            ),
            html.Div(id="trials-count", className="summary"),
            html.Div(id="trials-none"),
            dcc.Store(id="trials-sent"),
            trials_grid([]),
            html.H2("Compare the selected trials"),
            html.Div(
                [
                    curve_metric_control("curve metric", "trials-metric"),
                    dcc.Checklist(
                        id="trials-log",
                        options=[{"label": " loss on a log scale", "value": "log"}],
                        value=[],
                        className="control",
                    ),
                ],
                className="controls",
            ),
            html.Div(id="trials-selected", className="summary"),
            graph("trials-compare-curves"),
            graph("trials-compare-metrics"),
            html.Div(id="trials-compare-table"),
            html.H2("Hyperparameters → objective"),
            dropdown_control("run", "trials-run"),
            graph("trials-parallel"),
            graph("trials-importance"),
            html.P(
                "Importance: a random forest (scikit-learn, 100 trees) is fitted to predict the "
                "objective from the hyperparameters of the run's successful trials; a "
                "hyperparameter's importance is how much the forest's R² drops when that column "
                "alone is shuffled (permutation importance, 10 shuffles, ± their standard "
                "deviation); past 25 trials it is updated every 25 successful trials. It says "
                "what the forest relies on, not what causes a good trial; with few trials it is "
                "noisy, and a hyperparameter the search held fixed scores 0.",
                className="hint",
                id="trials-importance-method",
            ),
        ]
    )


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------

INFO_COLUMNS = (
    ("run", "run", False),
    ("trial", "trial", True),
    ("status", "status", False),
    ("objective", "objective", True),
    ("epochs", "epochs", True),
    ("best_val_loss_epoch", "best val-loss epoch", True),
    ("seconds", "seconds", True),
    ("host", "host", False),
    ("device", "device", False),
    ("started", "started (UTC)", False),
    ("error", "error", False),
)


def _metric_order(name: str) -> tuple[int, str]:
    if name in HEADLINE_METRICS:
        return (0, f"{HEADLINE_METRICS.index(name):03d}")
    return (1 if "/" not in name else 2, name)


def grid_columns(rows: Sequence[dict[str, Any]], pinned: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Column definitions for the trial rows: the trial's facts, then a group of
    hyperparameters and a group per split of metrics (the headline metrics shown, the rest —
    confusion counts, per-epitope AUCs — when the group is opened)."""
    pins = set(ALWAYS_PINNED) | set(pinned)

    def pin(spec: dict[str, Any]) -> dict[str, Any]:
        if spec["field"] in pins:
            spec["pinned"] = "left"
        return spec

    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    defs: list[dict[str, Any]] = [pin(column("key", "trial id", tooltipField="key"))]
    for field, header, numeric in INFO_COLUMNS:
        extra: dict[str, Any] = {}
        if field == "status":
            extra["cellClassRules"] = {"cell-failed": "params.value === 'failed'"}
        if field == "error":
            extra["tooltipField"] = "error"
        defs.append(pin(column(field, header, numeric, **extra)))
    params = sorted(k for k in keys if k.startswith("param:"))
    if params:
        defs.append(
            {
                "headerName": "hyperparameters",
                "children": [
                    pin(column(p, p.split(":", 1)[1], all(_is_number(r.get(p)) for r in rows)))
                    for p in params
                ],
            }
        )
    for split, title in (("val", "validation metrics"), ("test", "test metrics")):
        names = sorted((k.split(":", 1)[1] for k in keys if k.startswith(f"{split}:")), key=_metric_order)
        if not names:
            continue
        children = []
        for name in names:
            spec = pin(column(f"{split}:{name}", name, True))
            if name not in HEADLINE_METRICS:
                spec["columnGroupShow"] = "open"
            children.append(spec)
        defs.append({"headerName": title, "groupId": split, "children": children, "openByDefault": False})
    return defs


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def pin_options(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Every column but the trial id (always pinned) as a choice."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [{"label": k, "value": k} for k in keys if k not in ALWAYS_PINNED]


def trials_grid(rows: list[dict[str, Any]], pinned: Sequence[str] = ()) -> Component:
    """The grid of every trial (or a note when there are none)."""
    return data_grid(
        "trials-grid",
        grid_columns(rows, pinned),
        rows,
        row_id="key",
        text_ids=True,
        selectable=True,
        file_name="trials.csv",
        height=GRID_HEIGHT,
        row_classes={"row-failed": "params.data.status === 'failed'"},
    )


SIGNIFICANT_DIGITS = 6


def compact(value: Any) -> Any:
    """A float to 6 significant digits (beyond what a metric on a few thousand pairs can tell
    apart): with a thousand trials × 60 metrics the grid's data is 2.3 MB of JSON, and the
    digits past the sixth, which do not compress, are half of what goes over the wire."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if isinstance(value, float) else value


def grid_content(ctx: Dashboard, pinned: Sequence[str] | None) -> tuple[Any, ...]:
    """The grid's rows (floats to 6 significant digits) and columns, the pin choices, a count
    line and a note when empty. The grid keeps its selection across refreshes: rows are
    identified by their trial id."""
    rows = all_trial_rows(ctx)
    if not rows:
        return (
            [],
            grid_columns([]),
            [],
            "no trials",
            note("No trials yet: start a search.", id="trials-empty"),
        )
    runs = len({r["run"] for r in rows})
    return (
        [{k: compact(grid_value(v)) for k, v in r.items()} for r in rows],
        grid_columns(rows, pinned or []),
        pin_options(rows),
        f"{len(rows)} trials in {runs} run(s)",
        None,
    )


class GridSnapshots:
    """What the grid was last sent, per client, so a refresh sends only what changed.

    Each update is numbered; the client keeps the number of the rows it holds (``trials-sent``)
    and the server the rows of the last ``keep`` numbers. With a thousand trials the full data
    is 250 kB compressed; a trial that lands while a search runs is then one row of AG Grid's
    ``rowTransaction`` instead. A client whose number is unknown (a new page, or too old) gets
    everything.
    """

    def __init__(self, keep: int = 32) -> None:
        self.keep = keep
        self._next = 0
        self._sent: OrderedDict[int, tuple[dict[str, dict[str, Any]], tuple[str, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def update(
        self, rows: list[dict[str, Any]], columns: tuple[str, ...], sent: int | None
    ) -> tuple[Any, Any, bool, int]:
        """``(rowData, rowTransaction, columns changed, number)``: the full rows or a
        transaction (each ``no_update`` when not needed), whether the columns differ from what
        the client holds, and the number the client now holds."""
        current = {r["key"]: r for r in rows}
        with self._lock:
            previous = self._sent.get(sent) if sent is not None else None
            number = self._next
            self._next += 1
            self._sent[number] = (current, columns)
            while len(self._sent) > self.keep:
                self._sent.popitem(last=False)
        if previous is None:
            return rows, no_update, True, number
        before, before_columns = previous
        add = [r for k, r in current.items() if k not in before]
        update = [r for k, r in current.items() if k in before and before[k] != r]
        remove = [{"key": k} for k in before if k not in current]
        transaction = (
            {"add": add, "update": update, "remove": remove} if add or update or remove else no_update
        )
        return no_update, transaction, columns != before_columns, number


def grid_update(
    ctx: Dashboard, snapshots: GridSnapshots, pinned: Sequence[str] | None, sent: int | None
) -> tuple[Any, ...]:
    """:func:`grid_content` as the callback sends it: a transaction of the changed rows when the
    client's rows are known, the column definitions only when the columns changed."""
    rows, columns, pins, count, empty = grid_content(ctx, pinned)
    names = tuple(pins_value["value"] for pins_value in pins)
    row_data, transaction, columns_changed, number = snapshots.update(rows, names, sent)
    return row_data, transaction, columns if columns_changed else no_update, pins, count, empty, number


# ---------------------------------------------------------------------------------------------
# Comparing the selection
# ---------------------------------------------------------------------------------------------


def selected_trials(ctx: Dashboard, selected: Sequence[dict[str, Any]] | None) -> list[TrialRecord]:
    """The trial records of the selected grid rows, in the order selected (gone ones skipped)."""
    out = []
    for row in selected or []:
        run_id, trial = row.get("run"), row.get("trial")
        if not isinstance(run_id, str) or not isinstance(trial, int):
            continue
        found = next((t for t in ctx.reader.trials(run_id) if t.trial_id == trial), None)
        if found is not None:
            out.append(found)
    return out


def comparison_table(
    trials: Sequence[TrialRecord], baselines: dict[str, dict[str, float]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (one per headline metric) and columns for the side-by-side test metrics: each
    selected trial, each run's k-mer baseline, and always-negative on the first trial's split."""
    columns = [column("metric", "test metric", pinned="left")]
    keys = []
    for t in trials:
        key = trial_key(t.run_id, t.trial_id)
        keys.append((key, t.test_metrics))
        columns.append(column(key, key, True))
    for run_id in baselines:
        columns.append(column(f"baseline {run_id}", f"k-mer baseline ({run_id})", True))
    rate = next((r for r in (positive_rate(t.test_metrics) for t in trials) if r is not None), None)
    negative = always_negative(rate)
    columns.append(column("always negative", "always negative", True))
    rows = []
    for name in HEADLINE_METRICS:
        row: dict[str, Any] = {"metric": name}
        for key, metrics in keys:
            row[key] = _finite(metrics.get(name))
        for run_id, base in baselines.items():
            row[f"baseline {run_id}"] = _finite(base.get(name))
        row["always negative"] = negative.get(name)
        rows.append(row)
    return rows, columns


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def compare_content(
    ctx: Dashboard, selected: Sequence[dict[str, Any]] | None, metric: str, log_y: bool
) -> tuple[go.Figure, go.Figure, Component, str]:
    """Curves, test metrics (with the baselines) and the side-by-side table of the selection."""
    trials = selected_trials(ctx, selected)
    if not trials:
        empty = figures.empty_figure("select trials in the grid (the check boxes) to compare them")
        return empty, empty, note("No trials selected."), "no trials selected"
    histories = {trial_key(t.run_id, t.trial_id): t.history for t in trials}
    baselines = {
        run_id: base["test"]
        for run_id in dict.fromkeys(t.run_id for t in trials)
        if (base := ctx.baseline(run_id)) and base.get("test")
    }
    rows = [
        {"key": trial_key(t.run_id, t.trial_id), **{f"test:{k}": v for k, v in t.test_metrics.items()}}
        for t in trials
    ]
    table_rows, table_columns = comparison_table(trials, baselines)
    missing = [r for r in dict.fromkeys(t.run_id for t in trials) if r not in baselines]
    summary = f"{len(trials)} trial(s) selected from {len({t.run_id for t in trials})} run(s)"
    if missing:
        summary += f"; no k-mer baseline stored for {', '.join(missing)}"
    return (
        figures.training_curves(histories, metric, log_y=log_y),
        figures.metrics_comparison(rows, COMPARE_METRICS, baselines),
        data_grid("trials-compare-grid", table_columns, table_rows, file_name="comparison.csv"),
        summary,
    )


# ---------------------------------------------------------------------------------------------
# Hyperparameters against the objective
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _importance(names: tuple[str, ...], records: tuple[tuple[Any, ...], ...]) -> Importance:
    frame = pd.DataFrame(list(records), columns=["objective", *names])
    return hyperparameter_importance(frame, list(names))


IMPORTANCE_STEP = 25  # past this many successful trials, recompute once per this many more


def importance_of(frame: pd.DataFrame, names: list[str]) -> Importance:
    """:func:`hyperparameter_importance`, computed once per set of successful trials.

    With a thousand trials it costs about a second; while a big search runs, it is recomputed
    only when the number of successful trials reaches the next multiple of ``IMPORTANCE_STEP``
    (on the first trials by id; the title says how many), not on every trial that lands.
    """
    names = [n for n in names if n in frame.columns]
    ok = frame[frame["objective"].notna()] if "objective" in frame else frame.iloc[0:0]
    if len(ok) > IMPORTANCE_STEP:
        ok = ok.sort_values("trial_id").head(len(ok) - len(ok) % IMPORTANCE_STEP)
    records = tuple(tuple(r) for r in ok[["objective", *names]].itertuples(index=False, name=None))
    return _importance(tuple(names), records)


def run_figures(ctx: Dashboard, run_id: str | None) -> tuple[go.Figure, go.Figure]:
    """Parallel coordinates and hyperparameter importance of one run."""
    manifest = ctx.reader.manifest(run_id) if run_id else None
    if manifest is None:
        empty = figures.empty_figure("no run selected")
        return empty, empty
    trials = ctx.reader.trials(manifest.run_id)
    frame = trials_frame(trials)
    names = list(manifest.search_space) or sorted({k for t in trials for k in t.params})
    result = importance_of(frame, names)
    label = f"{result.trials} trials, forest R² on them {result.r2:.2f}" if result.names else result.reason
    return (
        figures.parallel_coordinates(frame, names, manifest.objective),
        figures.importance(result.names, result.mean, result.std, label),
    )


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    snapshots = GridSnapshots()

    @app.callback(
        Output("trials-grid", "rowData"),
        Output("trials-grid", "rowTransaction"),
        Output("trials-grid", "columnDefs"),
        Output("trials-pin", "options"),
        Output("trials-count", "children"),
        Output("trials-none", "children"),
        Output("trials-sent", "data"),
        Input("store-version", "data"),
        State("trials-sent", "data"),
        State("trials-pin", "value"),
    )
    def update_grid(_: int, sent: int | None, pinned: list[str] | None) -> tuple[Any, ...]:
        return grid_update(ctx, snapshots, pinned, sent)

    @app.callback(
        Output("trials-grid", "columnDefs", allow_duplicate=True),
        Input("trials-pin", "value"),
        prevent_initial_call=True,
    )
    def pin_columns(pinned: list[str] | None) -> Any:
        return grid_columns(all_trial_rows(ctx), pinned or [])

    @app.callback(
        Output("trials-grid", "exportDataAsCsv"),
        Input("trials-csv", "n_clicks"),
        prevent_initial_call=True,
    )
    def export_csv(_: int) -> bool:
        return True

    @app.callback(
        Output("trials-compare-curves", "figure"),
        Output("trials-compare-metrics", "figure"),
        Output("trials-compare-table", "children"),
        Output("trials-selected", "children"),
        Input("trials-grid", "selectedRows"),
        Input("trials-metric", "value"),
        Input("trials-log", "value"),
    )
    def update_compare(selected: Any, metric: str, log: list[str] | None) -> tuple[Any, Any, Any, str]:
        return compare_content(ctx, selected, metric, "log" in (log or []))

    @app.callback(
        Output("trials-run", "options"),
        Output("trials-run", "value"),
        Input("store-version", "data"),
        State("trials-run", "value"),
    )
    def update_runs(_: int, current: str | None) -> tuple[list[dict[str, str]], Any]:
        options, value = run_options(ctx.reader.runs(), current)
        return options, changed(value, current)

    @app.callback(
        Output("trials-parallel", "figure"),
        Output("trials-importance", "figure"),
        Input("store-version", "data"),
        Input("trials-run", "value"),
    )
    def update_run(_: int, run_id: str | None) -> tuple[go.Figure, go.Figure]:
        return run_figures(ctx, run_id)
