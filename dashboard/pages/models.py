"""Models: every registered model (the paper's model overview) and the results of the chosen one."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from dashboard import figures
from dashboard.components import changed, graph, key_values, metrics_table, note, table
from dashboard.data import Dashboard, ModelFiles, model_files
from tcr_pipeline.bundle import ModelCard
from tcr_pipeline.metrics import confusion_matrix, epitope_aucs
from tcr_pipeline.store import Registry, RegistryEntry

PATH = "/models"
NAME = "Models"


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Registered models"),
            html.Div(id="models-table"),
            html.H2("Results"),
            html.Label(
                ["model", dcc.Dropdown(id="models-choice", clearable=False)], className="control wide"
            ),
            html.Div(id="models-details"),
        ]
    )


def models_table(registry: Registry, files: dict[str, ModelFiles]) -> Component:
    """One row per registered model, best objective first."""
    if not registry.models:
        return note("No registered models yet: a search registers its top three trials when it ends.")
    rows, classes = [], []
    for e in sorted(registry.models, key=lambda e: (-e.objective, e.model_id)):
        available = files[e.model_id]
        in_use = e.model_id == registry.current
        rows.append(
            [
                html.Code(e.model_id),
                e.objective,
                e.trained,
                e.registered,
                "in use" if in_use else "–",
                "yes" if available.available else f"missing {', '.join(available.missing)}",
                e.params.get("model.kind", "–"),
                e.params.get("lr"),
                e.params.get("epochs", "–"),
                e.test_metrics.get("precision"),
                e.test_metrics.get("recall"),
                e.test_metrics.get("mean_epitope_auc"),
            ]
        )
        classes.append("current" if in_use else ("unavailable" if not available.available else ""))
    return table(
        [
            "model",
            f"objective ({registry.models[0].objective_name})",
            "trained",
            "registered",
            "in use",
            "file available",
            "kind",
            "lr",
            "epochs",
            "test precision",
            "test recall",
            "test mean epitope AUC",
        ],
        rows,
        id="models-registry-table",
        row_class=classes,
    )


def model_details(entry: RegistryEntry | None, card: ModelCard | None, files: ModelFiles | None) -> Component:
    """A model's results: metrics per split, its training curves, confusion matrix, epitope AUCs."""
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
                        graph(figure=figures.epitope_auc(epitope_aucs(entry.test_metrics), "test")),
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
        return model_details(entry, ctx.models.card(entry), model_files(ctx.store, entry))
