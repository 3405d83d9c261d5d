"""Training: per-epoch curves of chosen trials overlaid, the search's progress, hyperparameters
against the objective."""

from __future__ import annotations

import math
from typing import Any

import dash
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html

from dashboard import figures
from dashboard.components import changed, curve_metric_control, dropdown_control, graph
from dashboard.data import Dashboard
from tcr_pipeline.store import RunManifest, TrialRecord

PATH = "/training"
NAME = "Training"
DEFAULT_TRIALS = 3


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Training"),
            html.Div(
                [
                    dropdown_control("run", "training-run"),
                    html.Label(
                        [
                            "trials",
                            dcc.Dropdown(id="training-trials", multi=True, placeholder="choose trials"),
                        ],
                        className="control wide",
                    ),
                    curve_metric_control("metric", "training-metric"),
                    dcc.Checklist(
                        id="training-options",
                        options=[
                            {"label": " follow the newest run and its best trials", "value": "follow"},
                            {"label": " loss on a log scale", "value": "log"},
                        ],
                        value=["follow"],
                        className="control",
                    ),
                ],
                className="controls",
            ),
            html.Div(id="training-summary", className="summary"),
            graph("training-curves"),
            graph("training-progress"),
            graph("training-hyperparameters"),
        ]
    )


def trial_label(trial: TrialRecord) -> str:
    objective = f"{trial.objective:.3f}" if trial.objective is not None else trial.status
    return f"trial {trial.trial_id} ({objective})"


def run_options(
    runs: list[RunManifest], current: str | None, follow: bool = False
) -> tuple[list[dict[str, str]], str | None]:
    """The run choices, newest first, and the selection: the newest when ``follow`` (a new run
    takes over as it starts), else kept while it exists."""
    ordered = sorted(runs, key=lambda m: m.started, reverse=True)
    options = [{"label": f"{m.run_id} ({m.status})", "value": m.run_id} for m in ordered]
    ids = {m.run_id for m in ordered}
    newest = ordered[0].run_id if ordered else None
    return options, newest if follow or current not in ids else current


def trial_options(
    trials: list[TrialRecord], selected: list[int] | None, follow: bool = False
) -> tuple[list[dict[str, Any]], list[int]]:
    """Trials to choose from and the selection: the best few when ``follow`` (a better trial
    that lands takes a place), else kept if still valid, else the best few."""
    options = [{"label": trial_label(t), "value": t.trial_id} for t in trials]
    ids = {t.trial_id for t in trials}
    kept = [t for t in (selected or []) if t in ids]
    if kept and not follow:
        return options, kept
    ranked = sorted(
        (t for t in trials if t.history),
        key=lambda t: -(t.objective if t.objective is not None and math.isfinite(t.objective) else -math.inf),
    )
    return options, [t.trial_id for t in ranked[:DEFAULT_TRIALS]]


def trials_frame(trials: list[TrialRecord]) -> pd.DataFrame:
    """One row per trial: id, status, objective (NaN unless ok) and each hyperparameter."""
    rows = [
        {
            "trial_id": t.trial_id,
            "status": t.status,
            "objective": t.objective if t.scored else math.nan,
            **t.params,
        }
        for t in trials
    ]
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "status", "objective"])


def curves_figure(
    trials: list[TrialRecord], chosen: list[int] | None, metric: str, log_y: bool = False
) -> go.Figure:
    by_id = {t.trial_id: t for t in trials}
    histories = {trial_label(by_id[i]): by_id[i].history for i in chosen or [] if i in by_id}
    return figures.training_curves(histories, metric, log_y=log_y)


def search_figures(
    manifest: RunManifest | None, trials: list[TrialRecord]
) -> tuple[go.Figure, go.Figure, str]:
    """The progress and hyperparameter figures of a run, and a one-line summary."""
    if manifest is None:
        empty = figures.empty_figure("no run selected")
        return empty, empty, ""
    frame = trials_frame(trials)
    names = list(manifest.search_space) or sorted({k for t in trials for k in t.params})
    done = sum(t.done for t in trials)
    failed = sum(t.status == "failed" for t in trials)
    summary = (
        f"run {manifest.run_id}: {manifest.status}, {done}/{manifest.max_evals} trials finished"
        f" ({failed} failed, {sum(t.status == 'running' for t in trials)} running)"
    )
    return (
        figures.search_progress(frame, manifest.objective),
        figures.hyperparameter_effects(frame, names, manifest.objective),
        summary,
    )


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("training-run", "options"),
        Output("training-run", "value"),
        Input("store-version", "data"),
        Input("training-options", "value"),
        State("training-run", "value"),
    )
    def update_runs(
        _: int, switches: list[str] | None, current: str | None
    ) -> tuple[list[dict[str, str]], Any]:
        options, value = run_options(ctx.reader.runs(), current, "follow" in (switches or []))
        return options, changed(value, current)

    @app.callback(
        Output("training-trials", "options"),
        Output("training-trials", "value"),
        Input("store-version", "data"),
        Input("training-run", "value"),
        State("training-trials", "value"),
        State("training-options", "value"),
    )
    def update_trials(
        _: int, run_id: str | None, selected: list[int] | None, switches: list[str] | None
    ) -> tuple[list[Any], Any]:
        new_run = dash.ctx.triggered_id == "training-run"
        options, value = trial_options(
            ctx.reader.trials(run_id) if run_id else [],
            None if new_run else selected,
            "follow" in (switches or []),
        )
        return options, value if new_run else changed(value, selected)

    @app.callback(
        Output("training-curves", "figure"),
        Input("training-trials", "value"),
        Input("training-metric", "value"),
        Input("training-options", "value"),
        Input("store-version", "data"),
        State("training-run", "value"),
    )
    def update_curves(
        chosen: list[int] | None, metric: str, switches: list[str] | None, _: int, run_id: str | None
    ) -> go.Figure:
        trials = ctx.reader.trials(run_id) if run_id else []
        return curves_figure(trials, chosen, metric, "log" in (switches or []))

    @app.callback(
        Output("training-progress", "figure"),
        Output("training-hyperparameters", "figure"),
        Output("training-summary", "children"),
        Input("store-version", "data"),
        Input("training-run", "value"),
    )
    def update_search(_: int, run_id: str | None) -> tuple[go.Figure, go.Figure, str]:
        if not run_id:
            return search_figures(None, [])
        return search_figures(ctx.reader.manifest(run_id), ctx.reader.trials(run_id))
