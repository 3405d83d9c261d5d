"""Class balance: positives and negatives in the data, what the sampler feeds the model, and how
the selected model treats the rare positive class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dash
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from dashboard import figures
from dashboard.components import changed, dropdown_control, graph, key_values, model_options, note
from dashboard.data import Dashboard, metric_value
from tcr_pipeline.metrics import confusion_matrix, epitope_aucs
from tcr_pipeline.store import RegistryEntry, RunManifest
from tcr_pipeline.store.run_data import Prepared, epitope_counts, epitope_positives, sampler_counts

PATH = "/balance"
NAME = "Class balance"
SPLIT_CHOICES = [{"label": s, "value": s} for s in ("all", "train", "val", "test")]
METRIC_SPLITS = [{"label": "validation", "value": "val"}, {"label": "test", "value": "test"}]


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Class balance"),
            html.Div(
                [
                    dropdown_control("model", "balance-model", wide=True),
                    html.Label(
                        [
                            "epitopes of",
                            dcc.RadioItems(
                                id="balance-split", options=SPLIT_CHOICES, value="all", inline=True
                            ),
                        ],
                        className="control",
                    ),
                    html.Label(
                        [
                            "model metrics on",
                            dcc.RadioItems(
                                id="balance-metric-split", options=METRIC_SPLITS, value="test", inline=True
                            ),
                        ],
                        className="control",
                    ),
                ],
                className="controls",
            ),
            html.Div(id="balance-note"),
            html.H3("The data"),
            html.Div(
                [
                    html.Div(graph("balance-splits"), className="col"),
                    html.Div(graph("balance-epitopes"), className="col"),
                ],
                className="row",
            ),
            graph("balance-sampler"),
            html.H3("The selected model on the positive class"),
            html.Div(id="balance-model-facts"),
            html.Div(
                [
                    html.Div(graph("balance-ratio"), className="col"),
                    html.Div(graph("balance-confusion"), className="col"),
                ],
                className="row",
            ),
            graph("balance-epitope-auc"),
        ]
    )


@dataclass(frozen=True)
class DataTables:
    """What the data half of the page shows, computed once per prepared data set."""

    class_counts: dict[str, dict[str, int]]
    epitopes: pd.DataFrame
    sampled: pd.DataFrame
    balanced: bool


def data_tables(prepared: Prepared, balanced: bool) -> DataTables:
    return DataTables(
        class_counts=prepared.meta["class_counts"],
        epitopes=epitope_counts(prepared),
        sampled=sampler_counts(prepared, balanced),
        balanced=balanced,
    )


def data_figures(
    tables: DataTables | None, split: str, why: str = ""
) -> tuple[go.Figure, go.Figure, go.Figure]:
    """Rows per split, per epitope, and one epoch of the sampler (blank with ``why`` when no data)."""
    if tables is None:
        empty = figures.empty_figure(why or "no prepared data")
        return empty, empty, empty
    return (
        figures.class_counts(tables.class_counts),
        figures.epitope_counts(tables.epitopes, None if split == "all" else split),
        figures.sampler_composition(tables.sampled, tables.balanced),
    )


def model_figures(
    entry: RegistryEntry | None,
    split: str,
    positives: dict[str, int] | None = None,
    no_positives: str = "",
) -> tuple[Component, go.Figure, go.Figure, go.Figure]:
    """Facts (precision, recall, ratio) and figures of the selected model's metrics on ``split``;
    ``positives`` per epitope in ``split`` label the per-epitope AUC bars (``no_positives``: why
    there are none)."""
    if entry is None:
        empty = figures.empty_figure("no model registered yet")
        return note("No model registered yet."), empty, empty, empty
    metrics = {"val": entry.val_metrics, "test": entry.test_metrics}
    chosen = metrics[split]
    if not chosen:
        empty = figures.empty_figure(f"no {split} metrics recorded for this model")
        return note(f"No {split} metrics recorded for {entry.model_id}."), empty, empty, empty
    ratios = [
        {"split": name, "predicted": m["tp"] + m["fp"], "actual": m["tp"] + m["fn"]}
        for name, m in metrics.items()
        if m and "tp" in m
    ]
    actual = chosen.get("tp", 0) + chosen.get("fn", 0)
    facts = key_values(
        {
            "precision on predicted positives": metric_value(chosen, "precision"),
            "recall on positives": metric_value(chosen, "recall"),
            "predicted / actual positives": metric_value(chosen, "positive_ratio"),
            "actual positive share": actual / chosen["n"] if chosen.get("n") else None,
            "mean epitope ROC-AUC": metric_value(chosen, "mean_epitope_auc"),
        }
    )
    matrix = confusion_matrix(chosen) if "tn" in chosen else []
    return (
        html.Div(facts, id="balance-facts-table"),
        figures.positive_ratio(ratios),
        figures.confusion_matrix(matrix, split),
        figures.epitope_auc(epitope_aucs(chosen), split, positives, no_positives),
    )


def sampler_is_balanced(ctx: Dashboard, entry: RegistryEntry | None, run: RunManifest | None) -> bool:
    """Whether the model (else the run's configuration) trained with the class-balanced sampler."""
    card = ctx.models.card(entry) if entry else None
    if card is not None:
        return bool(card.train_params.get("balanced", True))
    return bool((run.params.get("train") or {}).get("balanced", True)) if run else True


def balance_data(
    ctx: Dashboard, model_id: str | None, split: str
) -> tuple[go.Figure, go.Figure, go.Figure, Any]:
    """The data figures for a model's run, or the latest run's while no model is registered."""
    entry = ctx.entry(model_id)
    run = ctx.reader.manifest(entry.run_id) if entry else ctx.latest_run()
    if run is None:
        return (*data_figures(None, split, "no runs in this store yet"), None)
    prepared, why = ctx.prepared_for_run(run.run_id, entry.data_sha256 if entry else "")
    if prepared is None:
        return (*data_figures(None, split, why), note(f"Data of run {run.run_id}: {why}.", "warning"))
    balanced = sampler_is_balanced(ctx, entry, run)
    tables = ctx.prepared.table(prepared, f"balance-{balanced}", lambda p: data_tables(p, balanced))
    return (*data_figures(tables, split), None)


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("balance-model", "options"),
        Output("balance-model", "value"),
        Input("store-version", "data"),
        State("balance-model", "value"),
    )
    def update_models(_: int, selected: str | None) -> tuple[list[Any], Any]:
        options, value = model_options(ctx.ranked_models(), ctx.reader.registry().current, selected, "in use")
        return options, changed(value, selected)

    @app.callback(
        Output("balance-splits", "figure"),
        Output("balance-epitopes", "figure"),
        Output("balance-sampler", "figure"),
        Output("balance-note", "children"),
        Input("balance-model", "value"),
        Input("balance-split", "value"),
    )
    def update_data(model_id: str | None, split: str) -> tuple[go.Figure, go.Figure, go.Figure, Any]:
        return balance_data(ctx, model_id, split)

    @app.callback(
        Output("balance-model-facts", "children"),
        Output("balance-ratio", "figure"),
        Output("balance-confusion", "figure"),
        Output("balance-epitope-auc", "figure"),
        Input("balance-model", "value"),
        Input("balance-metric-split", "value"),
    )
    def update_model(model_id: str | None, split: str) -> tuple[Component, go.Figure, go.Figure, go.Figure]:
        entry = ctx.entry(model_id)
        positives, why = None, ""
        if entry is not None:
            prepared, why = ctx.prepared_for(entry)
            if prepared is not None:
                positives = ctx.prepared.table(
                    prepared, f"positives:{split}", lambda p: epitope_positives(p, split)
                )
        return model_figures(entry, split, positives, why)
