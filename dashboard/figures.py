"""Pure figure builders: plain data in, a ``plotly.graph_objects.Figure`` out. No I/O.

Each figure is constructed once from its traces and a complete layout dict. Plotly's named
templates (~50 ms to copy and validate per figure), ``make_subplots`` and the ``update_*``
methods (each another validation pass) would cost more than all the data on a page, so the
figures start from the empty template and lay their panels out by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

COLORS = qualitative.Plotly
POSITIVE = "#d62728"
NEGATIVE = "#1f77b4"
NEUTRAL = "#7f7f7f"
GRID = "#e5e7eb"
_AXIS = {"gridcolor": GRID, "zerolinecolor": GRID, "automargin": True}


def _figure(traces: Sequence[Any], title: str, height: int = 360, **layout: Any) -> go.Figure:
    """One construction of a figure with the dashboard's look."""
    base: dict[str, Any] = {
        "template": "none",
        "title": {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        "margin": {"l": 60, "r": 20, "t": 70, "b": 50},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.06, "xanchor": "right", "x": 1},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": COLORS,
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "height": height,
        "xaxis": dict(_AXIS),
        "yaxis": dict(_AXIS),
    }
    for key, value in layout.items():
        if key.startswith(("xaxis", "yaxis")) and isinstance(value, dict):
            base[key] = {**_AXIS, **base.get(key, {}), **value}
        else:
            base[key] = value
    return go.Figure(data=list(traces), layout=base)


def _panels(
    titles: Sequence[str], widths: Sequence[float] | None = None, shared_y: bool = False
) -> dict[str, Any]:
    """Layout entries for side-by-side panels: axes ``x``/``y``, ``x2``/``y2``…, titles above."""
    gap = 0.08
    sizes = list(widths or [1.0] * len(titles))
    scale = (1 - gap * (len(titles) - 1)) / sum(sizes)
    layout: dict[str, Any] = {"annotations": []}
    start = 0.0
    for i, (title, size) in enumerate(zip(titles, sizes, strict=True), start=1):
        end = start + size * scale
        suffix = "" if i == 1 else str(i)
        layout[f"xaxis{suffix}"] = {"domain": [start, end], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {
            "anchor": f"x{suffix}",
            **({"matches": "y"} if shared_y and i > 1 else {}),
        }
        layout["annotations"].append(
            {
                "text": title,
                "x": (start + end) / 2,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 13},
            }
        )
        start = end + gap
    return layout


def _integer_ticks(largest: float) -> dict[str, Any]:
    """Ticks on whole numbers only (epochs, trial ids), about ten of them."""
    return {"tick0": 0, "dtick": max(1, math.ceil(largest / 10))}


def _axes(col: int) -> dict[str, str]:
    return {"xaxis": "x" if col == 1 else f"x{col}", "yaxis": "y" if col == 1 else f"y{col}"}


def _axis(col: int) -> str:
    return "xaxis" if col == 1 else f"xaxis{col}"


def empty_figure(message: str) -> go.Figure:
    """A blank figure that says why there is nothing to show."""
    return _figure(
        [],
        "",
        height=240,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}
        ],
    )


def _column(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    """One metric per epoch as a float array (missing values NaN: gaps in the line).

    Arrays rather than lists: plotly sends them as packed binary, lists element by element.
    """
    return np.array([h.get(key, math.nan) for h in history], dtype=float)


METRIC_UNITS = {
    "val_loss": "binary cross-entropy (nats per pair)",
    "train_loss": "binary cross-entropy (nats per pair)",
    "val_roc_auc": "ROC-AUC (0.5 chance, 1 perfect)",
    "val_mean_epitope_auc": "mean ROC-AUC per epitope (0.5 chance)",
    "val_precision": "precision (share of predicted positives, 0–1)",
    "val_recall": "recall (share of positives found, 0–1)",
    "val_accuracy": "accuracy (share of pairs, 0–1)",
    "val_paper_objective": "paper objective (at most 16)",
    "val_average_precision": "average precision (0–1)",
    "val_positive_ratio": "predicted / actual positives (1 ideal)",
}
LOWER_IS_BETTER = {"val_loss", "train_loss"}


def best_epoch(history: Sequence[Mapping[str, float]], key: str) -> int | None:
    """The index of the best epoch for ``key`` (lowest for losses, highest otherwise), or None."""
    values = _column(history, key)
    if not np.isfinite(values).any():
        return None
    return int(np.nanargmin(values) if key in LOWER_IS_BETTER else np.nanargmax(values))


def training_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], metric: str, log_y: bool = False
) -> go.Figure:
    """Train and validation loss per epoch, and one validation metric, for several trials overlaid.

    ``histories`` maps a trial's label to its per-epoch records (``TrialRecord.history``). Each
    trial's best epoch is starred: lowest validation loss on the left, best ``metric`` on the
    right (training keeps the weights of the epoch that was best by the run's objective, which
    is the star on the right when the metric is that objective). ``log_y`` puts the loss axis on
    a log scale (the metric panel stays linear: its values lie between 0 and 1, or 16 for the
    paper objective).
    """
    if not histories or not any(histories.values()):
        return empty_figure("no per-epoch history yet for the selected trials")
    traces = []
    for i, (label, history) in enumerate(histories.items()):
        color = COLORS[i % len(COLORS)]
        epochs = np.array([h.get("epoch", n + 1) for n, h in enumerate(history)], dtype=float)
        common = {"x": epochs, "mode": "lines+markers", "legendgroup": label}
        traces += [
            go.Scatter(
                y=_column(history, "val_loss"),
                name=label,
                line={"color": color},
                **common,
                **_axes(1),
            ),
            go.Scatter(
                y=_column(history, "train_loss"),
                name=f"{label} (train)",
                line={"color": color, "dash": "dot"},
                showlegend=False,
                **common,
                **_axes(1),
            ),
            go.Scatter(
                y=_column(history, metric),
                name=label,
                line={"color": color},
                showlegend=False,
                **common,
                **_axes(2),
            ),
        ]
        for col, key in ((1, "val_loss"), (2, metric)):
            best = best_epoch(history, key)
            if best is None:
                continue
            traces.append(
                go.Scatter(
                    x=[epochs[best]],
                    y=[_column(history, key)[best]],
                    mode="markers",
                    marker={
                        "symbol": "star",
                        "size": 14,
                        "color": color,
                        "line": {"color": "black", "width": 1},
                    },
                    name=f"{label}: best epoch",
                    legendgroup=label,
                    showlegend=False,
                    hovertemplate=f"{label}<br>best {key}: epoch %{{x}}, %{{y:.4f}}<extra></extra>",
                    **_axes(col),
                )
            )
    layout = _panels(("loss (solid: validation, dotted: training; ★ best epoch)", f"{metric} (★ best epoch)"))
    longest = max(len(h) for h in histories.values())
    for axis in ("xaxis", "xaxis2"):
        layout[axis].update(title={"text": "epoch"}, **_integer_ticks(longest))
    layout["yaxis"]["title"] = {"text": METRIC_UNITS["val_loss"] + (" (log scale)" if log_y else "")}
    if log_y:
        layout["yaxis"]["type"] = "log"
    layout["yaxis2"]["title"] = {"text": METRIC_UNITS.get(metric, metric)}
    return _figure(traces, "per-epoch curves", height=400, **layout)


def search_progress(trials: pd.DataFrame, objective_name: str) -> go.Figure:
    """Objective per trial (failed trials marked at the bottom) with the best-so-far line.

    ``trials`` has columns ``trial_id``, ``status``, ``objective`` (NaN unless ok).
    """
    if trials.empty:
        return empty_figure("no trials yet")
    trials = trials.sort_values("trial_id")
    ok = trials[(trials["status"] == "ok") & trials["objective"].notna()]
    finished = trials[trials["status"] != "running"]
    best = finished["objective"].where(finished["status"] == "ok").cummax().ffill()
    traces = [
        go.Scatter(
            x=ok["trial_id"].to_numpy(),
            y=ok["objective"].to_numpy(),
            mode="markers",
            name="trial",
            marker={"size": 7, "color": COLORS[0]},
            hovertemplate="trial %{x}<br>objective %{y:.4f}<extra></extra>",
        ),
        go.Scatter(
            x=finished["trial_id"].to_numpy(),
            y=best.to_numpy(),
            mode="lines",
            line={"shape": "hv", "color": COLORS[1], "width": 2},
            name="best so far",
            hovertemplate="after trial %{x}: best %{y:.4f}<extra></extra>",
        ),
    ]
    failed = trials[trials["status"] == "failed"]
    if not failed.empty:
        floor = float(ok["objective"].min()) if not ok.empty else 0.0
        traces.append(
            go.Scatter(
                x=failed["trial_id"].to_numpy(),
                y=np.full(len(failed), floor),
                mode="markers",
                name="failed",
                marker={"symbol": "x", "size": 9, "color": POSITIVE},
                hovertemplate="trial %{x} failed<extra></extra>",
            )
        )
    return _figure(
        traces,
        f"search progress ({len(finished)} finished)",
        xaxis={"title": {"text": "trial"}, **_integer_ticks(float(trials["trial_id"].max()))},
        yaxis={"title": {"text": objective_name}},
    )


def hyperparameter_effects(trials: pd.DataFrame, names: Sequence[str], objective_name: str) -> go.Figure:
    """Each hyperparameter against the objective, one panel each (categories as jittered strips).

    ``trials`` has a column per hyperparameter in ``names`` plus ``objective`` and ``trial_id``.
    """
    ok = trials[trials["objective"].notna()] if not trials.empty else trials
    names = [n for n in names if n in ok.columns]
    if ok.empty or not names:
        return empty_figure("no successful trials yet")
    layout = _panels(names, shared_y=True)
    layout["yaxis"]["title"] = {"text": objective_name}
    rng = np.random.default_rng(0)
    traces = []
    for col, name in enumerate(names, start=1):
        values = ok[name]
        numeric = pd.to_numeric(values, errors="coerce")
        extra: dict[str, Any] = {}
        if pd.api.types.is_numeric_dtype(values) or (numeric.notna().all() and values.dtype != object):
            x: Any = numeric.to_numpy(dtype=float)
            shown = "%{x}"
            layout[_axis(col)]["title"] = {"text": name}
        else:
            categories = sorted(values.astype(str).unique())
            index = values.astype(str).map({c: i for i, c in enumerate(categories)}).to_numpy()
            x = index + rng.uniform(-0.15, 0.15, len(index))
            shown = "%{text}"
            extra["text"] = values.astype(str).to_numpy()
            layout[_axis(col)].update(tickvals=list(range(len(categories))), ticktext=categories)
        traces.append(
            go.Scatter(
                x=x,
                y=ok["objective"].to_numpy(dtype=float),
                mode="markers",
                marker={"size": 7, "color": COLORS[0], "opacity": 0.75},
                customdata=ok["trial_id"].to_numpy(),
                hovertemplate=f"trial %{{customdata}}<br>{name} {shown}<br>objective %{{y:.4f}}"
                "<extra></extra>",
                showlegend=False,
                **extra,
                **_axes(col),
            )
        )
    return _figure(traces, "hyperparameters against the objective", height=340, **layout)


def class_counts(counts: Mapping[str, Mapping[str, int]]) -> go.Figure:
    """Positives and negatives per split (``{"train": {"positive": n, "negative": m}, …}``)."""
    if not counts:
        return empty_figure("no class counts")
    known = [s for s in ("train", "val", "test") if s in counts]
    splits = known + sorted(s for s in counts if s not in known)
    traces = []
    for label, color in (("negative", NEGATIVE), ("positive", POSITIVE)):
        values = [counts[s].get(label, 0) for s in splits]
        traces.append(go.Bar(x=splits, y=values, name=label, marker_color=color, text=values))
    share = [f"{counts[s].get('positive', 0) / max(sum(counts[s].values()), 1):.1%} positive" for s in splits]
    return _figure(
        traces,
        "rows per split",
        height=340,
        barmode="group",
        xaxis={"tickvals": splits, "ticktext": [f"{s}<br>{p}" for s, p in zip(splits, share, strict=True)]},
        yaxis={"title": {"text": "rows"}},
    )


def epitope_counts(counts: pd.DataFrame, split: str | None = None) -> go.Figure:
    """Positives and negatives per epitope (one split, or all when ``split`` is None).

    ``counts`` has columns epitope, split, positive, negative.
    """
    chosen = counts if split is None else counts[counts["split"] == split]
    if chosen.empty:
        return empty_figure("no data")
    totals = chosen.groupby("epitope")[["positive", "negative"]].sum().sort_values("positive")
    traces = [
        go.Bar(
            y=totals.index.to_numpy(),
            x=totals[label].to_numpy(),
            name=label,
            orientation="h",
            marker_color=color,
        )
        for label, color in (("negative", NEGATIVE), ("positive", POSITIVE))
    ]
    return _figure(
        traces,
        f"rows per epitope ({split or 'all splits'})",
        height=max(340, 26 * len(totals) + 120),
        barmode="stack",
        legend={
            "traceorder": "normal",
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.02,
            "xanchor": "right",
            "x": 1,
        },
        xaxis={"title": {"text": "rows"}},
    )


def sampler_composition(sampled: pd.DataFrame, balanced: bool) -> go.Figure:
    """What one epoch of the training loop draws per class and epitope, against the split.

    ``sampled`` has columns epitope, label, split_rows, drawn, distinct (``data.sampler_counts``).
    """
    if sampled.empty:
        return empty_figure("no training rows")
    by_class = sampled.groupby("label")[["split_rows", "drawn", "distinct"]].sum()
    pivot = sampled.pivot_table(index="epitope", columns="label", values="drawn", aggfunc="sum").fillna(0)
    traces = []
    for label, color in (("negative", NEGATIVE), ("positive", POSITIVE)):
        if label in by_class.index:
            row = by_class.loc[label].astype(int).to_dict()
            traces.append(
                go.Bar(
                    x=["training split", "drawn per epoch", "distinct rows drawn"],
                    y=[row["split_rows"], row["drawn"], row["distinct"]],
                    name=label,
                    marker_color=color,
                    legendgroup=label,
                    text=[row["split_rows"], row["drawn"], row["distinct"]],
                    **_axes(1),
                )
            )
        if label in pivot.columns:
            traces.append(
                go.Bar(
                    x=pivot.index.to_numpy(),
                    y=pivot[label].to_numpy(),
                    name=label,
                    marker_color=color,
                    legendgroup=label,
                    showlegend=False,
                    **_axes(2),
                )
            )
    how = "class-balanced: each class drawn with probability ½" if balanced else "uniform: each row once"
    layout = _panels(("classes in one epoch", "drawn per epitope in one epoch"), widths=(0.35, 0.65))
    return _figure(traces, f"what the sampler feeds the model ({how})", height=400, barmode="group", **layout)


def positive_ratio(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Predicted against actual positives per split (``[{"split", "predicted", "actual"}, …]``)."""
    if not rows:
        return empty_figure("no metrics for this model")
    splits = [r["split"] for r in rows]
    traces = [
        go.Bar(x=splits, y=[r["actual"] for r in rows], name="actual positives", marker_color=NEUTRAL),
        go.Bar(
            x=splits,
            y=[r["predicted"] for r in rows],
            name="predicted positives",
            marker_color=POSITIVE,
            text=[f"ratio {r['predicted'] / r['actual']:.2f}" if r["actual"] else "" for r in rows],
        ),
    ]
    return _figure(
        traces,
        "predicted against actual positives",
        height=320,
        barmode="group",
        yaxis={"title": {"text": "rows"}},
    )


def confusion_matrix(matrix: Sequence[Sequence[int]], split: str) -> go.Figure:
    """A 2×2 confusion matrix ``[[tn, fp], [fn, tp]]`` as an annotated heat map."""
    z = np.asarray(matrix, dtype=float)
    if z.shape != (2, 2):
        return empty_figure("no confusion matrix")
    text = [[f"TN {int(z[0, 0])}", f"FP {int(z[0, 1])}"], [f"FN {int(z[1, 0])}", f"TP {int(z[1, 1])}"]]
    heatmap = go.Heatmap(
        z=np.log1p(z),
        x=["predicted 0", "predicted 1"],
        y=["actual 0", "actual 1"],
        text=text,
        texttemplate="%{text}",
        colorscale="Blues",
        showscale=False,
        hoverinfo="text",
    )
    return _figure([heatmap], f"confusion matrix ({split})", height=320, yaxis={"autorange": "reversed"})


def epitope_auc(
    aucs: Mapping[str, float],
    split: str,
    positives: Mapping[str, int] | None = None,
    missing_counts: str = "",
) -> go.Figure:
    """ROC-AUC per epitope, sorted, with 0.5 (chance) marked.

    ``positives`` (positives per epitope in ``split``, from the prepared data) labels each bar
    with its count, so a reader sees which AUCs rest on a handful of positives; epitopes of
    ``positives`` without an AUC (no positives, or no negatives, in the split) are listed under
    the chart rather than dropped. Without ``positives``, ``missing_counts`` says why.
    """
    positives = dict(positives or {})
    without = sorted(e for e in positives if e not in aucs)
    if not aucs:
        message = "no per-epitope ROC-AUC (each epitope needs both classes)"
        if without:
            message += "<br>epitopes without an AUC: " + ", ".join(
                f"{e} ({positives[e]} positives)" for e in without
            )
        return empty_figure(message)
    items = sorted(aucs.items(), key=lambda kv: kv[1])

    def label(epitope: str, value: float) -> str:
        if epitope in positives:
            return f"{value:.3f} (n+ = {positives[epitope]})"
        return f"{value:.3f}"

    bar = go.Bar(
        x=[v for _, v in items],
        y=[k for k, _ in items],
        orientation="h",
        marker_color=COLORS[0],
        text=[label(k, v) for k, v in items],
        textposition="auto",
        customdata=[positives.get(k, -1) for k, _ in items],
        hovertemplate="%{y}: ROC-AUC %{x:.3f}<extra></extra>",
        name="ROC-AUC",
    )
    chance = {
        "type": "line",
        "x0": 0.5,
        "x1": 0.5,
        "y0": 0,
        "y1": 1,
        "yref": "paper",
        "line": {"dash": "dash", "color": NEUTRAL},
    }
    if positives:
        listed = [f"{e} ({positives[e]} positives)" for e in without]
        # four to a line, so a long list wraps instead of running off the figure
        lines = [", ".join(listed[i : i + 4]) for i in range(0, len(listed), 4)]
        footer = (
            "epitopes without an AUC in this split: " + ",<br>".join(lines)
            if without
            else "every epitope of the data has an AUC here"
        )
        subtitle = "n+ = positives in the split"
    else:
        footer = "positives per epitope unknown" + (f": {missing_counts}" if missing_counts else "")
        subtitle = "positives per epitope unknown"
    footer_lines = footer.count("<br>") + 1
    annotation = {
        "text": footer,
        "x": 0,
        "y": 0,
        "xref": "paper",
        "yref": "paper",
        "xanchor": "left",
        "yanchor": "top",
        "yshift": -62,  # under the axis title
        "showarrow": False,
        "font": {"size": 11, "color": "#4b5563"},
        "align": "left",
    }
    return _figure(
        [bar],
        f"ROC-AUC per epitope ({split}; dashed: chance; {subtitle})",
        height=max(340, 26 * len(items) + 150) + 16 * footer_lines,
        shapes=[chance],
        annotations=[annotation],
        margin={"l": 60, "r": 20, "t": 70, "b": 80 + 16 * footer_lines},
        xaxis={"range": [0, 1], "title": {"text": "ROC-AUC (0.5 chance)"}},
    )


# ---------------------------------------------------------------------------------------------
# Comparing trials (the Trials page)
# ---------------------------------------------------------------------------------------------


def metrics_comparison(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    baselines: Mapping[str, Mapping[str, float]],
) -> go.Figure:
    """Test metrics of the chosen trials side by side (one group per metric, one bar per
    trial), each run's k-mer baseline a dashed line over its metric.

    ``rows`` are trial rows (``data.trial_row``); ``baselines`` maps a run id to its baseline's
    test metrics.
    """
    if not rows:
        return empty_figure("select trials in the grid (the check boxes) to compare them")
    traces = []
    for i, row in enumerate(rows):
        values = [row.get(f"test:{m}") for m in metrics]
        traces.append(
            go.Bar(
                x=list(metrics),
                y=[v if isinstance(v, int | float) and math.isfinite(v) else None for v in values],
                name=str(row["key"]),
                marker_color=COLORS[i % len(COLORS)],
                hovertemplate=f"{row['key']}<br>%{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    shapes = []
    dashes = ("dash", "dot", "dashdot", "longdash")
    for j, (run_id, base) in enumerate(baselines.items()):
        xs, ys = [], []
        for k, m in enumerate(metrics):
            value = base.get(m)
            if value is None or not math.isfinite(value):
                continue
            shapes.append(
                {
                    "type": "line",
                    "xref": "x",
                    "yref": "y",
                    "x0": k - 0.45,
                    "x1": k + 0.45,
                    "y0": value,
                    "y1": value,
                    "line": {"color": "black", "dash": dashes[j % len(dashes)], "width": 2},
                }
            )
            xs.append(m)
            ys.append(value)
        # an invisible-line trace, so the baseline has a legend entry and a hover value
        traces.append(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 24, "color": "black"},
                name=f"k-mer baseline ({run_id})",
                hovertemplate=f"baseline {run_id}<br>%{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    return _figure(
        traces,
        "test metrics of the selected trials (black lines: each run's k-mer baseline)",
        height=380,
        barmode="group",
        shapes=shapes,
        yaxis={"title": {"text": "value on the test split (0–1)"}},
    )


PARALLEL_BINS = 6  # lines are drawn in this many colour bands of the objective (one trace each)


def parallel_coordinates(trials: pd.DataFrame, names: Sequence[str], objective_name: str) -> go.Figure:
    """One line per successful trial through an axis per hyperparameter to the objective,
    coloured by the objective (dark: low, yellow: high).

    Drawn with cartesian traces (the dashboard ships plotly.js's cartesian bundle, which has no
    ``parcoords``): each axis is scaled to its own range, printed under it; categories are spread
    evenly and named. Hovering a point names the trial and its value.
    """
    ok = trials[trials["objective"].notna()] if not trials.empty else trials
    names = [n for n in names if n in ok.columns]
    if ok.empty or not names:
        return empty_figure("no successful trials yet")
    from plotly.colors import sample_colorscale

    columns = [*names, "objective"]
    scaled: list[np.ndarray] = []
    shown: list[list[str]] = []
    annotations: list[dict[str, Any]] = []
    for i, name in enumerate(columns):
        values = ok[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            low, high = float(numeric.min()), float(numeric.max())
            span = high - low or 1.0
            scaled.append(
                ((numeric - low) / span).to_numpy(dtype=float) if high > low else np.full(len(ok), 0.5)
            )
            shown.append([f"{v:.4g}" for v in numeric])
            labels = [(0.0, f"{low:.4g}"), (1.0, f"{high:.4g}")] if high > low else [(0.5, f"{low:.4g}")]
        else:
            categories = sorted(values.astype(str).unique())
            step = 1.0 / max(len(categories) - 1, 1)
            position = {c: (k * step if len(categories) > 1 else 0.5) for k, c in enumerate(categories)}
            scaled.append(values.astype(str).map(position).to_numpy(dtype=float))
            shown.append(values.astype(str).tolist())
            labels = [(position[c], c) for c in categories]
        for y, text in labels:
            annotations.append(
                {
                    "x": i,
                    "y": y,
                    "xref": "x",
                    "yref": "y",
                    "text": text,
                    "showarrow": False,
                    "xanchor": "left",
                    "xshift": 4,
                    "font": {"size": 10, "color": "#4b5563"},
                }
            )
    objective = ok["objective"].to_numpy(dtype=float)
    low, high = float(objective.min()), float(objective.max())
    bands = (
        np.zeros(len(ok), dtype=int)
        if high == low
        else np.minimum(((objective - low) / (high - low) * PARALLEL_BINS).astype(int), PARALLEL_BINS - 1)
    )
    colors = sample_colorscale("Viridis", [(b + 0.5) / PARALLEL_BINS for b in range(PARALLEL_BINS)])
    trial_ids = ok["trial_id"].to_numpy() if "trial_id" in ok else np.arange(len(ok))
    traces: list[Any] = []
    for band in range(PARALLEL_BINS):
        rows = np.flatnonzero(bands == band)
        if not len(rows):
            continue
        xs: list[float] = []
        ys: list[float] = []
        texts: list[str] = []
        for r in rows:  # every trial's line, separated by gaps (one trace per colour band)
            xs += [*range(len(columns)), math.nan]
            ys += [float(col[r]) for col in scaled] + [math.nan]
            texts += [f"trial {trial_ids[r]}: {c} = {shown[k][r]}" for k, c in enumerate(columns)] + [""]
        traces.append(
            go.Scatter(
                x=np.array(xs, dtype=float),
                y=np.array(ys, dtype=float),
                mode="lines+markers",
                line={"color": colors[band], "width": 1.5},
                marker={"size": 5, "color": colors[band]},
                opacity=0.8,
                text=texts,
                hovertemplate="%{text}<extra></extra>",
                showlegend=False,
            )
        )
    # the colour scale, as an invisible marker trace with a colour bar
    traces.append(
        go.Scatter(
            x=[0],
            y=[math.nan],
            mode="markers",
            marker={
                "color": [low],
                "cmin": low,
                "cmax": high,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": objective_name}, "thickness": 12},
            },
            hoverinfo="skip",
            showlegend=False,
        )
    )
    shapes = [
        {
            "type": "line",
            "x0": i,
            "x1": i,
            "y0": 0,
            "y1": 1,
            "xref": "x",
            "yref": "y",
            "line": {"color": "#9ca3af", "width": 1},
        }
        for i in range(len(columns))
    ]
    return _figure(
        traces,
        f"hyperparameters → {objective_name} ({len(ok)} successful trials; each axis scaled to its range)",
        height=400,
        shapes=shapes,
        annotations=annotations,
        xaxis={
            "tickvals": list(range(len(columns))),
            "ticktext": [*names, objective_name],
            "range": [-0.2, len(columns) - 0.4],
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={"visible": False, "range": [-0.08, 1.08]},
    )


def importance(names: Sequence[str], mean: Sequence[float], std: Sequence[float], note: str) -> go.Figure:
    """Permutation importance per hyperparameter, largest on top, with ± one standard deviation."""
    if not names:
        return empty_figure(f"no hyperparameter importance: {note}")
    order = np.argsort(np.asarray(mean, dtype=float))
    bar = go.Bar(
        x=np.asarray(mean, dtype=float)[order],
        y=np.asarray(names)[order],
        orientation="h",
        error_x={"type": "data", "array": np.asarray(std, dtype=float)[order], "visible": True},
        marker_color=COLORS[0],
        hovertemplate="%{y}: %{x:.4f}<extra></extra>",
        name="importance",
    )
    return _figure(
        [bar],
        f"hyperparameter importance ({note})",
        height=max(260, 40 * len(names) + 140),
        xaxis={"title": {"text": "mean drop in the forest's R² when shuffled (± sd)"}},
    )


# ---------------------------------------------------------------------------------------------
# Monitoring (tables of dashboard.tables: drift_table, health_table)
# ---------------------------------------------------------------------------------------------

RATIO = "ratio"  # drift_over_time's pseudo-statistic: every check's value ÷ its threshold


def _utc(times: pd.Series) -> np.ndarray:
    """Report times as naive UTC (the axis says UTC; plotly would print the offset on every tick)."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(None).to_numpy()


def _threshold_shape(y: float, axis: str = "") -> dict[str, Any]:
    return {
        "type": "line",
        "xref": f"x{axis} domain",
        "yref": f"y{axis}",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": POSITIVE, "dash": "dash", "width": 1.5},
    }


def drift_over_time(drift: pd.DataFrame, statistic: str, label: str | None = None) -> go.Figure:
    """One drift statistic across monitoring reports: a line per feature, the threshold dashed,
    crossings marked ×.

    ``drift`` is :func:`dashboard.tables.drift_table`. With ``statistic`` = :data:`RATIO`
    every check is drawn as value ÷ threshold (one line per check, crossed above 1).
    """
    label = label or statistic
    if statistic == RATIO:
        rows = drift[drift["group"] != "health"].copy()
        rows["value"] = pd.to_numeric(rows["value"], errors="coerce") / rows["threshold"]
        rows["threshold"] = 1.0
        rows["feature"] = rows["feature"] + " " + rows["statistic"]
    else:
        rows = drift[drift["statistic"] == statistic].copy()
        rows["value"] = pd.to_numeric(rows["value"], errors="coerce")
    if rows.empty:
        return empty_figure(f"no {label} in the monitoring reports yet")
    rows = rows.sort_values("created")
    rows["time"] = _utc(rows["created"])
    traces: list[Any] = []
    for i, (feature, group) in enumerate(rows.groupby("feature", sort=True)):
        traces.append(
            go.Scatter(
                x=group["time"].to_numpy(),
                y=group["value"].to_numpy(dtype=float),
                mode="lines+markers",
                name=str(feature),
                line={"color": COLORS[i % len(COLORS)]},
                hovertemplate=f"{feature}<br>%{{x}}<br>{label} %{{y:.3g}}<extra></extra>",
            )
        )
    crossed = rows[rows["crossed"].astype(bool)]
    if not crossed.empty:
        traces.append(
            go.Scatter(
                x=crossed["time"].to_numpy(),
                y=crossed["value"].to_numpy(dtype=float),
                mode="markers",
                name="crossed",
                marker={"symbol": "x", "size": 12, "color": POSITIVE, "line": {"width": 2}},
                hoverinfo="skip",
            )
        )
    thresholds = rows.groupby("time")["threshold"].max()
    layout: dict[str, Any] = {}
    if thresholds.nunique() == 1:
        layout["shapes"] = [_threshold_shape(float(thresholds.iloc[0]))]
    else:  # the threshold was changed between reports: draw it as it was at each
        traces.append(
            go.Scatter(
                x=thresholds.index.to_numpy(),
                y=thresholds.to_numpy(dtype=float),
                mode="lines",
                line={"shape": "hv", "color": POSITIVE, "dash": "dash", "width": 1.5},
                name="threshold",
            )
        )
    title = (
        "every drift check ÷ its threshold (crossed above 1)"
        if statistic == RATIO
        else f"{label} per feature (dashed: threshold {float(thresholds.iloc[-1]):.3g})"
    )
    return _figure(
        traces,
        title,
        height=380,
        xaxis={"title": {"text": "report (UTC)"}},
        yaxis={"title": {"text": label}, "rangemode": "tozero"},
        **layout,
    )


def service_health(health: pd.DataFrame, thresholds: Mapping[str, float]) -> go.Figure:
    """Queries per report, the invalid-row rate and the p95 request latency over time, with the
    thresholds (``invalid_rate``, ``latency_p95_ms``) dashed.

    ``health`` is :func:`dashboard.tables.health_table`.
    """
    if health.empty:
        return empty_figure("no monitoring reports yet")
    health = health.sort_values("created")
    x = _utc(health["created"])
    layout = _panels(("logged rows in the window", "invalid-row rate", "request latency p95 (ms)"))

    def line(column: str, name: str, color: str, hover: str, panel: int) -> go.Scatter:
        values = pd.to_numeric(health[column], errors="coerce").to_numpy(dtype=float)
        return go.Scatter(
            x=x, y=values, mode="lines+markers", name=name, line={"color": color}, showlegend=False,
            hovertemplate=f"%{{x}}<br>{hover}<extra></extra>", **_axes(panel),
        )  # fmt: skip

    traces = [
        go.Bar(
            x=x,
            y=health["queries"].to_numpy(dtype=float),
            name="rows",
            marker_color=NEGATIVE,
            showlegend=False,
            hovertemplate="%{x}<br>%{y} rows<extra></extra>",
            **_axes(1),
        ),
        line("invalid_rate", "invalid rate", COLORS[1], "%{y:.1%} invalid", 2),
        line("latency_p95_ms", "p95 latency", COLORS[2], "p95 %{y:.0f} ms", 3),
    ]
    shapes = []
    for col, key in ((2, "invalid_rate"), (3, "latency_p95_ms")):
        value = thresholds.get(key)
        if value is not None:
            shapes.append(_threshold_shape(float(value), str(col)))
    layout["yaxis"].update(rangemode="tozero")
    layout["yaxis2"].update(rangemode="tozero", tickformat=".0%")
    layout["yaxis3"].update(rangemode="tozero")
    return _figure(
        traces, "service health per report (dashed: threshold)", height=320, shapes=shapes, **layout
    )


def warm_up() -> None:
    """Build one of each figure from made-up data: plotly imports its validators on first use."""
    frame = pd.DataFrame(
        {"trial_id": [0, 1], "status": ["ok", "ok"], "objective": [1.0, 2.0], "lr": [0.1, 0.2]}
    )
    training_curves({"t": [{"epoch": 1.0, "train_loss": 1.0, "val_loss": 1.0, "m": 1.0}]}, "m")
    search_progress(frame, "objective")
    hyperparameter_effects(frame, ["lr"], "objective")
    class_counts({"train": {"positive": 1, "negative": 2}})
    epitope_counts(pd.DataFrame({"epitope": ["E"], "split": ["train"], "positive": [1], "negative": [2]}))
    sampler = {"epitope": ["E"], "label": ["positive"], "split_rows": [1], "drawn": [1], "distinct": [1]}
    sampler_composition(pd.DataFrame(sampler), True)
    positive_ratio([{"split": "val", "predicted": 1, "actual": 1}])
    confusion_matrix([[1, 0], [0, 1]], "val")
    epitope_auc({"E": 0.5}, "val", {"E": 1, "F": 0})
    parallel_coordinates(frame, ["lr"], "objective")
    importance(["lr"], [0.1], [0.01], "")
    checks = {"created": [pd.Timestamp("2026-01-01", tz="UTC")], "group": ["input"], "feature": ["E"]}
    drift_over_time(
        pd.DataFrame(
            {**checks, "statistic": ["psi"], "value": [0.1], "threshold": [0.25], "crossed": [False]}
        ),
        "psi",
    )
    service_health(
        pd.DataFrame(
            {"created": checks["created"], "queries": [1], "invalid_rate": [0.0], "latency_p95_ms": [1.0]}
        ),
        {"invalid_rate": 0.1},
    )


__all__ = [
    "RATIO",
    "best_epoch",
    "class_counts",
    "confusion_matrix",
    "drift_over_time",
    "empty_figure",
    "epitope_auc",
    "epitope_counts",
    "hyperparameter_effects",
    "importance",
    "metrics_comparison",
    "parallel_coordinates",
    "positive_ratio",
    "sampler_composition",
    "search_progress",
    "service_health",
    "training_curves",
    "warm_up",
]
