"""Overview: the runs (status, progress, times, data version) and the current best model's card."""

from __future__ import annotations

import functools
import json
from typing import Any

import dash
from dash import Input, Output, html
from dash.development.base_component import Component
from torch import nn

from dashboard.components import (
    badge,
    fmt,
    key_values,
    metrics_table,
    note,
    progress,
    reference_block,
    table,
)
from dashboard.data import Dashboard, promotion_interval, reference
from tcr_pipeline.bundle import ModelCard, ModelParams, build_card_model
from tcr_pipeline.store import Registry, RegistryEntry, RunSummary, summarize_run

PATH = "/"
NAME = "Overview"


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Runs"),
            html.Div(id="overview-runs"),
            html.H2("Current best model"),
            html.Div(id="overview-best"),
        ]
    )


def runs_table(summaries: list[RunSummary]) -> Component:
    """One row per run, newest first."""
    if not summaries:
        return note("No runs in this store yet: start one with `tcr-pipeline search`.", id="overview-no-runs")
    rows = []
    for s in sorted(summaries, key=lambda s: s.manifest.started, reverse=True):
        m = s.manifest
        rows.append(
            [
                m.run_id,
                badge(m.status),
                progress(s.done, m.max_evals),
                s.failed,
                s.running,
                s.best,
                m.objective,
                m.started,
                m.finished,
                html.Code(m.data_sha256[:12], title=f"sha256 {m.data_sha256}\ndvc md5 {m.dvc_md5}"),
                m.cluster,
                (m.git_commit or "–")[:10] + (" (dirty)" if m.git_dirty else ""),
            ]
        )
    return table(
        [
            "run",
            "status",
            "trials done / max",
            "failed",
            "running",
            "best",
            "objective",
            "started",
            "finished",
            "data",
            "cluster",
            "git",
        ],
        rows,
        id="overview-runs-table",
    )


def architecture(card: ModelCard) -> str:
    """The network in one line: kind, layer widths and parameter count."""
    spec = json.dumps(card.input_spec, sort_keys=True) if card.input_spec else ""
    return _architecture(card.input_dim, card.model, spec, card.members)


@functools.lru_cache(maxsize=32)
def _architecture(input_dim: int, params: ModelParams, spec: str, members: int) -> str:
    card = ModelCard(
        input_dim=input_dim,
        model=params,
        train_params={},
        data_sha256="",
        input_spec=json.loads(spec) if spec else None,
        members=members,
    )
    model = build_card_model(card)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    parameters = sum(p.numel() for p in model.parameters())
    shown = " → ".join(str(w) for w in [card.input_dim, *widths])
    members_note = f", mean of {members} fold models" if members > 1 else ""
    return f"{params.kind}: {len(widths)} linear layers, {shown} ({parameters:,} parameters{members_note})"


def best_model_card(
    registry: Registry, card: ModelCard | None, baseline: dict[str, dict[str, float]] | None = None
) -> Component:
    """The current best model: what it is, how it did against its run's k-mer baseline and a
    model that always says no, where it came from, what it replaced."""
    entry = registry.current_entry
    if entry is None:
        return note("No model promoted yet: a search registers and promotes its best trials when it ends.")
    promotion = next((p for p in reversed(registry.history) if p.model_id == entry.model_id), None)
    facts: dict[str, Any] = {
        "model": html.Code(entry.model_id),
        f"objective ({entry.objective_name})": entry.objective,
        "architecture": architecture(card) if card else "bundle missing: " + entry.path,
        "hyperparameters": ", ".join(f"{k} = {fmt(v)}" for k, v in entry.params.items()) or "–",
        "data version": html.Span(
            [html.Code(entry.data_sha256[:12], title=entry.data_sha256), f"  dvc md5 {entry.dvc_md5 or '–'}"]
        ),
        "git commit": entry.git_commit or "–",
        "trained": entry.trained,
        "promoted": promotion.promoted if promotion else None,
        "replaced": _replaced(promotion, registry) if promotion else "–",
        "reason": promotion.reason if promotion else "–",
    }
    return html.Div(
        [
            html.Div(key_values(facts), className="col"),
            html.Div(
                [
                    html.H3("validation and test metrics"),
                    metrics_table(
                        {"val": entry.val_metrics, "test": entry.test_metrics}, id="overview-metrics"
                    ),
                ],
                className="col",
            ),
            html.Div(
                [
                    html.H3("against the k-mer baseline and always-negative (test split)"),
                    reference_block(
                        reference("test", entry.test_metrics, baseline),
                        entry.objective_name,
                        promotion_interval(promotion) if promotion else None,
                        id="overview-reference",
                    ),
                ],
                className="col wide",
            ),
            html.Div([html.H3("promotions"), promotions_table(registry)], className="col wide"),
        ],
        className="row",
        id="overview-best-card",
    )


def _replaced(promotion: Any, registry: Registry) -> str:
    if promotion.replaced is None:
        return "nothing (the first model)"
    previous = f" (objective {fmt(promotion.previous_objective)})" if promotion.previous_objective else ""
    return f"{promotion.replaced}{previous}"


def describe_interval(promotion: Any) -> str:
    """A promotion's bootstrap interval in one line, or a dash when it has none."""
    interval = promotion_interval(promotion)
    if interval is None:
        return "–"
    return (
        f"Δ {interval['metric']} {interval['delta']:+.4f} "
        f"[{interval['low']:+.4f}, {interval['high']:+.4f}]"
        + (f" ({interval['resamples']:,} resamples)" if interval["resamples"] else "")
    )


def promotions_table(registry: Registry) -> Component:
    rows = [
        [
            p.promoted,
            p.model_id,
            p.replaced or "–",
            p.objective,
            p.previous_objective,
            describe_interval(p),
            p.reason,
        ]
        for p in reversed(registry.history)
    ]
    return table(
        ["when", "model", "replaced", "objective", "previous", "interval (new − old)", "reason"],
        rows,
        id="overview-promotions",
    )


def overview_content(ctx: Dashboard) -> tuple[Component, Component]:
    """The two parts of the page, from the store."""
    summaries = [summarize_run(m, ctx.reader.trials(m.run_id)) for m in ctx.reader.runs()]
    registry = ctx.reader.registry()
    entry: RegistryEntry | None = registry.current_entry
    card = ctx.models.card(entry) if entry else None
    runs = runs_table(summaries)
    if ctx.reader.problems:
        unreadable = [f"{path}: {why}" for path, why in sorted(ctx.reader.problems.items())]
        runs = html.Div([runs, note("Files skipped: " + "; ".join(unreadable[:5]), "warning")])
    baseline = ctx.baseline(entry.run_id) if entry else None
    return runs, best_model_card(registry, card, baseline)


def register_callbacks(app: dash.Dash, ctx: Dashboard) -> None:
    @app.callback(
        Output("overview-runs", "children"),
        Output("overview-best", "children"),
        Input("store-version", "data"),
    )
    def update_overview(_: int) -> tuple[Component, Component]:
        return overview_content(ctx)
