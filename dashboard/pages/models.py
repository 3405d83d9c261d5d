"""Models: every registered model (the paper's model overview) and the results of the chosen one."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, html
from dash.development.base_component import Component

from dashboard import figures
from dashboard.components import (
    changed,
    column,
    data_grid,
    dropdown_control,
    graph,
    grid_value,
    key_values,
    metrics_table,
    note,
    reference_block,
)
from dashboard.data import (
    Dashboard,
    ModelFiles,
    model_files,
    promotion_interval,
    reference,
)
from tcr_pipeline.bundle import ModelCard
from tcr_pipeline.metrics import confusion_matrix, epitope_aucs
from tcr_pipeline.store import Registry, RegistryEntry
from tcr_pipeline.store.run_data import epitope_positives

PATH = "/models"
NAME = "Models"
GRID_METRICS = ("precision", "recall", "roc_auc", "average_precision", "mean_epitope_auc", "paper_objective")


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Registered models"),
            html.Div(id="models-table"),
            html.H2("Results"),
            dropdown_control("model", "models-choice", wide=True),
            html.Div(id="models-details"),
        ]
    )


def models_table(registry: Registry, files: dict[str, ModelFiles]) -> Component:
    """One row per registered model, best objective first (a grid: sort, filter, CSV)."""
    if not registry.models:
        return note("No registered models yet: a search registers its top three trials when it ends.")
    rows = []
    for e in sorted(registry.models, key=lambda e: (-e.objective, e.model_id)):
        available = files[e.model_id]
        rows.append(
            {
                "model": e.model_id,
                "objective": e.objective,
                "trained": grid_value(e.trained),
                "registered": grid_value(e.registered),
                "in_use": "in use" if e.model_id == registry.current else "–",
                "files": "yes" if available.available else f"missing {', '.join(available.missing)}",
                "available": available.available,
                **{f"param:{k}": grid_value(v) for k, v in e.params.items()},
                **{f"test:{m}": grid_value(e.test_metrics.get(m)) for m in GRID_METRICS},
            }
        )
    params = sorted({k for r in rows for k in r if k.startswith("param:")})
    columns = [
        column("model", "model", pinned="left"),
        column("objective", f"objective ({registry.models[0].objective_name})", True),
        column("trained", "trained (UTC)"),
        column("registered", "registered (UTC)"),
        column("in_use", "in use"),
        column("files", "file available"),
        {
            "headerName": "hyperparameters",
            "children": [
                column(p, p.split(":", 1)[1], all(isinstance(r.get(p), int | float) for r in rows))
                for p in params
            ],
        },
        {
            "headerName": "test metrics",
            "children": [column(f"test:{m}", f"test {m.replace('_', ' ')}", True) for m in GRID_METRICS],
        },
    ]
    return data_grid(
        "models-registry-table",
        columns,
        rows,
        row_id="model",
        text_ids=True,
        file_name="models.csv",
        row_classes={
            "row-current": "params.data.in_use === 'in use'",
            "row-unavailable": "!params.data.available",
        },
    )


def model_details(
    entry: RegistryEntry | None,
    card: ModelCard | None,
    files: ModelFiles | None,
    baseline: dict[str, dict[str, float]] | None = None,
    positives: dict[str, int] | None = None,
    no_positives: str = "",
    interval: dict[str, Any] | None = None,
) -> Component:
    """A model's results: metrics per split beside its run's k-mer baseline and always-negative,
    its training curves, confusion matrix, epitope AUCs (each bar with its number of test
    positives when the prepared data is here; ``no_positives`` says why not otherwise)."""
    if entry is None:
        return note("Choose a model.")
    facts = {
        "model": html.Code(entry.model_id),
        "path": str(files.path) if files else entry.path,
        "file available": "yes" if files and files.available else "no",
        "hyperparameters": ", ".join(f"{k} = {v}" for k, v in entry.params.items()),
        "data sha256": entry.data_sha256[:12],
        "git commit": entry.git_commit or "–",
        "trained": entry.trained,
    }
    history = card.history if card else []
    return html.Div(
        [
            html.Div(
                [
                    html.Div(key_values(facts), className="col"),
                    html.Div(
                        metrics_table(
                            {"val": entry.val_metrics, "test": entry.test_metrics}, id="models-metrics"
                        ),
                        className="col",
                    ),
                ],
                className="row",
            ),
            html.H3("against the k-mer baseline and always-negative (test split)"),
            reference_block(
                reference("test", entry.test_metrics, baseline),
                entry.objective_name,
                interval,
                id="models-reference",
            ),
            graph(figure=figures.training_curves({entry.model_id: history}, "val_roc_auc")),
            html.Div(
                [
                    html.Div(
                        graph(
                            figure=figures.confusion_matrix(
                                confusion_matrix(entry.test_metrics) if "tn" in entry.test_metrics else [],
                                "test",
                            )
                        ),
                        className="col",
                    ),
                    html.Div(
                        graph(
                            "models-epitope-auc",
                            figures.epitope_auc(
                                epitope_aucs(entry.test_metrics), "test", positives, no_positives
                            ),
                        ),
                        className="col",
                    ),
                ],
                className="row",
            ),
        ],
        id="models-details-body",
    )


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("models-table", "children"),
        Output("models-choice", "options"),
        Output("models-choice", "value"),
        Input("store-version", "data"),
        State("models-choice", "value"),
    )
    def update_table(_: int, selected: str | None) -> tuple[Component, list[Any], Any]:
        registry = ctx.reader.registry()
        files = {e.model_id: model_files(ctx.store, e) for e in registry.models}
        ranked = ctx.ranked_models()
        options = [{"label": e.model_id, "value": e.model_id} for e in ranked]
        ids = {e.model_id for e in ranked}
        value = (
            selected if selected in ids else (registry.current or (ranked[0].model_id if ranked else None))
        )
        return models_table(registry, files), options, changed(value, selected)

    @app.callback(Output("models-details", "children"), Input("models-choice", "value"))
    def update_details(model_id: str | None) -> Component:
        entry = ctx.reader.registry().get(model_id) if model_id else None
        if entry is None:
            return model_details(None, None, None)
        prepared, why = ctx.prepared_for(entry)
        positives = (
            ctx.prepared.table(prepared, "positives:test", lambda p: epitope_positives(p, "test"))
            if prepared
            else None
        )
        registry = ctx.reader.registry()
        promotion = next((p for p in reversed(registry.history) if p.model_id == entry.model_id), None)
        return model_details(
            entry,
            ctx.models.card(entry),
            model_files(ctx.store, entry),
            ctx.baseline(entry.run_id),
            positives,
            why,
            promotion_interval(promotion) if promotion else None,
        )
