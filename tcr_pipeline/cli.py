"""The ``tcr-pipeline`` command line. Bad input exits with status 2 and one line, no traceback."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tcr_pipeline.bundle import (
    CARD_FILE,
    ENCODER_FILE,
    VALIDATION_FILE,
    WEIGHTS_FILE,
    chunk_rows_from_env,
    load_bundle,
    load_card,
    predict_file,
)
from tcr_pipeline.config import Params, load_params
from tcr_pipeline.data import load_pairs, validate_file
from tcr_pipeline.errors import InfrastructureError, InputError
from tcr_pipeline.files import check_output_files, check_output_target, write_json_atomic, write_text_atomic
from tcr_pipeline.metrics import HEADLINE_METRICS as HEADLINE
from tcr_pipeline.metrics import always_negative
from tcr_pipeline.prepare import load_prepared, prepare_dataset
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.store import (
    RegistryEntry,
    Store,
    check_resume_budget,
    check_run_id,
    check_store,
    mark_stale,
    new_run_id,
    now,
)
from tcr_pipeline.training import evaluate_model

app = typer.Typer(
    help="Predict TCR–epitope binding: validate data, prepare, train, evaluate and predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ParamsOption = Annotated[
    Path | None,
    typer.Option("--params", "-p", help="params.yaml to read (default: ./params.yaml if present)."),
]


def _params(path: Path | None, overrides: dict[str, Any]) -> Params:
    if path is None and Path("params.yaml").exists():
        path = Path("params.yaml")
    return load_params(path, overrides)


def _metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    for split in metrics:
        table.add_column(split, justify="right")
    for name in HEADLINE:
        table.add_row(name, *(f"{m.get(name, float('nan')):.4f}" for m in metrics.values()))
    return table


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="CSV of TCR–epitope pairs.")],
    label: Annotated[bool, typer.Option("--label/--no-label", help="Require the Label column.")] = True,
) -> None:
    """Check a pair table: schema, amino acids, lengths, labels, duplicates, empty values.

    Prints every problem as file:row:column: message (row = line in the file) and exits with
    status 2 when there is any.
    """
    problems = validate_file(file, require_label=label)
    for problem in problems:
        out.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if problems:
        console.print(f"{len(problems)} problem(s) in {file}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print(f"{file}: valid", markup=False)


@app.command()
def prepare(
    params_file: ParamsOption = None,
    data: Annotated[Path | None, typer.Option(help="Raw CSV (default: data.raw).")] = None,
    encoding: Annotated[str | None, typer.Option(help="paper or onehot.")] = None,
    split: Annotated[str | None, typer.Option(help="random, tcr or epitope.")] = None,
    clone_id: Annotated[
        bool | None, typer.Option("--clone-id/--no-clone-id", help="Use clone_id as a feature (paper only).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("data/prepared"),
) -> None:
    """Validate, encode and split the raw data into tensors plus a JSON encoder."""
    params = _params(
        params_file,
        {
            "data.raw": str(data) if data else None,
            "prepare.encoding": encoding,
            "prepare.split": split,
            "prepare.use_clone_id": clone_id,
        },
    )
    prepared = prepare_dataset(params.data.raw, params.prepare, out_dir)
    counts = prepared.meta["class_counts"]
    out.print(
        f"prepared {prepared.meta['rows']} rows ({params.prepare.encoding}, split={params.prepare.split}, "
        f"{prepared.meta['feature_dim']} features) → {out_dir}",
        markup=False,
    )
    for name, count in counts.items():
        out.print(f"  {name}: {count['positive']} positive / {count['negative']} negative", markup=False)


@app.command()
def train(
    params_file: ParamsOption = None,
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Output of `prepare`.")] = Path(
        "data/prepared"
    ),
    out_dir: Annotated[Path, typer.Option("--out", help="Model bundle directory.")] = Path("models/model"),
    model: Annotated[str | None, typer.Option(help="kmer, cnn, small, medium or large.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 …")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Train one model (validation curves per epoch, best epoch kept) and save its bundle.

    With train.folds > 1 the model is the mean of K models trained on TCR-grouped folds of the
    training and validation splits, validated out of fold.
    """
    params = _params(
        params_file,
        {
            "train.model.kind": model,
            "train.lr": lr,
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.device": device,
            "train.seed": seed,
        },
    )
    check_output_files(out_dir, (WEIGHTS_FILE, ENCODER_FILE, CARD_FILE, VALIDATION_FILE))
    prepared = load_prepared(prepared_dir)
    with Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("train", total=params.train.epochs * params.train.folds, info="")

        def on_epoch(step: int, record: dict[str, float]) -> None:
            fold = f"fold {int(record['fold'])}/{params.train.folds} " if "fold" in record else ""
            info = (
                f"{fold}loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
                f"val_epitope_auc {record['val_mean_epitope_auc']:.3f}"
            )
            progress.update(task, completed=step, info=info)

        fitted = fit_and_save(prepared, params.train, params.evaluate, out_dir, on_epoch, splits=("val",))
    result, val = fitted.result, fitted.metrics["val"]
    out.print(
        f"trained {params.train.model.kind} in {result.seconds:.1f}s on {result.device} "
        f"(best epoch {result.best_epoch}) → {out_dir}",
        markup=False,
    )
    out.print(_metrics_table("validation", {"val": val}))


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Option("--model", help="Model bundle directory.")] = Path(
        "models/model"
    ),
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Output of `prepare`.")] = Path(
        "data/prepared"
    ),
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics", "-o", help="Write metrics JSON here.")
    ] = None,
    write_card: Annotated[
        bool, typer.Option("--write-card", help="Also record the metrics in the bundle's card.json.")
    ] = False,
) -> None:
    """Evaluate a model on the validation and test splits; the test split is used only here."""
    if metrics_file is not None:
        check_output_target(metrics_file, inputs=(model_dir / CARD_FILE,))
    if write_card:
        check_output_target(model_dir / CARD_FILE)
    bundle = load_bundle(model_dir)
    prepared = load_prepared(prepared_dir)
    if prepared.data_sha256 != bundle.card.data_sha256:
        raise InputError(
            f"{prepared_dir}: prepared from data {prepared.data_sha256[:12]}, but the model was trained on "
            f"{bundle.card.data_sha256[:12]}"
        )
    metrics = {
        split: evaluate_model(bundle.model, prepared, split, bundle.card.evaluate)
        for split in ("val", "test")
    }
    if write_card:
        card = bundle.card.model_copy(update={"metrics": metrics})
        write_text_atomic(model_dir / CARD_FILE, card.model_dump_json(indent=2) + "\n")
    if metrics_file is not None:
        write_json_atomic(metrics_file, {"data_sha256": prepared.data_sha256, **metrics})
    out.print(_metrics_table(f"{model_dir} (data {prepared.data_sha256[:12]})", metrics))


StoreOption = Annotated[
    Path | None,
    typer.Option("--store", envvar="TCR_STORE", help="Result store directory (default: ./store)."),
]
# the options `search` and `pipeline` share
MaxEvalsOption = Annotated[
    int | None, typer.Option(help="Trials in the run, resumed ones included (default: search.max_evals).")
]
ParallelismOption = Annotated[int | None, typer.Option(help="Trials in flight at once.")]
ClusterOption = Annotated[str | None, typer.Option(help="Cluster profile: local, slurm-local, slurm-gpu …")]
RunIdOption = Annotated[str | None, typer.Option(help="Resume this run, or name a new one.")]
ObjectiveOption = Annotated[
    str | None,
    typer.Option(help="paper, mean_epitope_auc, roc_auc, average_precision (default: evaluate.objective)."),
]
ForceOption = Annotated[bool, typer.Option(help="Promote even if not better than the current model.")]
SeedOption = Annotated[
    int | None,
    typer.Option(help="The run's seed, to repeat a run (default: a new one per run, kept in its manifest)."),
]


@contextmanager
def _search_progress(store: Store, run_id: str, total: int) -> Iterator[None]:
    """A progress bar fed by polling the store (trials done / total, best objective so far)."""
    stop = threading.Event()
    with Progress(
        TextColumn("[bold]search"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("search", total=total, info="")

        def poll() -> None:
            while not stop.wait(1.0):
                try:
                    trials = store.list_trials(run_id)
                except InputError:
                    continue
                done = [t for t in trials if t.done]
                scores = [t.objective for t in done if t.status == "ok" and t.objective is not None]
                best = f"best {max(scores):.4f}" if scores else "best -"
                progress.update(bar, completed=len(done), info=f"{best}, {len(trials) - len(done)} running")

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _search_overrides(
    max_evals: int | None, parallelism: int | None, cluster: str | None, objective: str | None
) -> dict[str, Any]:
    return {
        "search.max_evals": max_evals,
        "search.parallelism": parallelism,
        "search.cluster": cluster,
        "evaluate.objective": objective,
    }


@contextmanager
def _prefect_server() -> Iterator[None]:
    """A temporary Prefect server for a flow command when none is configured, in its own session.

    Prefect would start one itself, but as a child in our process group: Ctrl-C in a terminal
    reaches every process of the group, the server dies first, and the interrupted flow then
    retries its state updates against it for minutes. Here the server runs in a new session, so
    only this process sees the signal; it stops the flow (run recorded as ``interrupted``), the
    Dask cluster, and then the server.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    _quiet_input_errors()
    settings = get_current_settings()
    if os.environ.get("PREFECT_API_URL") or settings.api.url:  # a server is configured: use it
        yield
        return
    import httpx
    import prefect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    env = {**os.environ, **server_env, **settings.to_environment_variables(exclude_unset=True)}
    server = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"The temporary Prefect API server exited with status {server.returncode} on start."
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Timed out after {timeout:.0f} s while attempting to connect to the temporary "
                    "Prefect API server."
                )
            time.sleep(0.2)
        os.environ["PREFECT_API_URL"] = url  # Dask worker processes report to the same server
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                _drain_prefect_services()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def _interrupted_run(store: Store, run_id: str) -> Iterator[None]:
    """On an interruption, make sure the run is recorded as ``interrupted`` and say how to resume it."""
    try:
        yield
    except KeyboardInterrupt:
        manifest = store.load_manifest(run_id)
        if manifest is not None:
            if manifest.status == "running":  # stopped before the flow could record it
                store.write_manifest(manifest.model_copy(update={"status": "interrupted", "finished": now()}))
            _interruption["note"] = (
                f"run {run_id} recorded as interrupted in {store.root}; resume it with --run-id {run_id}"
            )
        raise


class _InputErrorFilter(logging.Filter):
    """Drop Prefect's log records of an InputError or InfrastructureError (with their traceback):
    main() prints it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], (InputError, InfrastructureError)))


def _quiet_input_errors() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _InputErrorFilter) for f in handler.filters):
            handler.addFilter(_InputErrorFilter())


def _die_with_parent() -> None:
    """In the server process: get SIGTERM when this process dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _drain_prefect_services() -> None:
    """Send Prefect's queued logs and events while the server is still up (as its test harness does)."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # never started
            pass
        drained = EventsWorker.drain_all()
        if inspect.isawaitable(drained):
            await drained

    run_coro_as_sync(drain())


def _params_path(params_file: Path | None) -> str | None:
    return str(params_file) if params_file else "params.yaml"


def _check_search(
    params: Params, result_store: Store, run_id: str | None, prepared_dir: Path, *, prepared: bool
) -> str:
    """Everything about a search that can be checked before a Prefect server or Dask cluster starts.

    ``prepared``: the prepared directory must already hold data (``search``), else it is an
    output (``pipeline`` prepares it). Returns the run id (a new one when none was given).
    """
    from tcr_pipeline.clusters import load_profile
    from tcr_pipeline.prepare import ENCODER_FILE as PREPARED_ENCODER
    from tcr_pipeline.prepare import META_FILE, TENSORS_FILE, read_prepared_meta

    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    check_output_target(result_store.root, directory=True)
    load_profile(params.search.cluster)
    manifest = result_store.load_manifest(run_id)
    if manifest is not None:
        check_resume_budget(result_store, run_id, params.search.max_evals)
    if prepared:
        meta = read_prepared_meta(prepared_dir)
        if manifest is not None and manifest.data_sha256 != meta["data_sha256"]:
            raise InputError(
                f"{prepared_dir}: holds data {meta['data_sha256'][:12]}, but run {run_id} was started on "
                f"{manifest.data_sha256[:12]} (prepare that data again, or start a new run)"
            )
    else:
        check_output_files(prepared_dir, (TENSORS_FILE, PREPARED_ENCODER, META_FILE))
    return run_id


@app.command()
def search(
    max_evals: MaxEvalsOption = None,
    parallelism: ParallelismOption = None,
    cluster: ClusterOption = None,
    store: StoreOption = None,
    run_id: RunIdOption = None,
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Output of `prepare`.")] = Path(
        "data/prepared"
    ),
    params_file: ParamsOption = None,
    objective: ObjectiveOption = None,
    promote: Annotated[bool, typer.Option("--promote/--no-promote", help="Register and promote.")] = True,
    seed: SeedOption = None,
    force: ForceOption = False,
) -> None:
    """Hyperparameter search (hyperopt TPE) as a Prefect flow on a Dask cluster; resumable by --run-id."""
    from flows.runner import check_cluster
    from flows.search import search_flow

    # read (and check) the configuration and the inputs here, before a Prefect server starts
    params = _params(params_file, _search_overrides(max_evals, parallelism, cluster, objective))
    check_cluster(cluster or params.search.cluster)  # workers on other nodes need a reachable API
    result_store = Store.from_env(store)
    run_id = _check_search(params, result_store, run_id, prepared_dir, prepared=True)
    with (
        _interrupted_run(result_store, run_id),
        _prefect_server(),
        _search_progress(result_store, run_id, params.search.max_evals),
    ):
        outcome = search_flow(
            run_id=run_id,
            max_evals=max_evals,
            parallelism=parallelism,
            cluster=cluster,
            store=str(result_store.root),
            prepared_dir=str(prepared_dir),
            params_file=_params_path(params_file),
            objective=objective,
            seed=seed,
            promote=promote,
            force=force,
        )
    out.print_json(json.dumps(outcome, default=str))


@app.command()
def pipeline(
    data: Annotated[Path | None, typer.Option(help="Raw CSV (default: data.raw).")] = None,
    max_evals: MaxEvalsOption = None,
    parallelism: ParallelismOption = None,
    cluster: ClusterOption = None,
    store: StoreOption = None,
    run_id: RunIdOption = None,
    prepared_dir: Annotated[Path, typer.Option("--prepared", help="Where to prepare the data.")] = Path(
        "data/prepared"
    ),
    params_file: ParamsOption = None,
    objective: ObjectiveOption = None,
    seed: SeedOption = None,
    force: ForceOption = False,
) -> None:
    """The whole `tcr-pipeline` flow: prepare → search → promote."""
    from flows.pipeline import pipeline_flow
    from flows.runner import check_cluster

    # read (and check) the configuration and the inputs here, before a Prefect server starts
    params = _params(
        params_file,
        {
            **_search_overrides(max_evals, parallelism, cluster, objective),
            "data.raw": str(data) if data else None,
        },
    )
    check_cluster(cluster or params.search.cluster)  # workers on other nodes need a reachable API
    result_store = Store.from_env(store)
    run_id = _check_search(params, result_store, run_id, prepared_dir, prepared=False)
    load_pairs(params.data.raw, require_clone_id=params.prepare.use_clone_id)  # the data, row by row
    with (
        _interrupted_run(result_store, run_id),
        _prefect_server(),
        _search_progress(result_store, run_id, params.search.max_evals),
    ):
        outcome = pipeline_flow(
            data=str(data) if data else None,
            run_id=run_id,
            max_evals=max_evals,
            parallelism=parallelism,
            cluster=cluster,
            store=str(result_store.root),
            prepared_dir=str(prepared_dir),
            params_file=_params_path(params_file),
            objective=objective,
            seed=seed,
            force=force,
        )
    out.print_json(json.dumps(outcome, default=str))
    out.print(
        f"results: store {result_store.root}; best model: tcr-pipeline best --store {result_store.root}",
        markup=False,
    )


@app.command()
def runs(store: StoreOption = None) -> None:
    """List the search runs in the store: status, progress, best objective."""
    result_store = Store.from_env(store)
    table = Table(title=f"runs in {result_store.root}")
    for column in ("run", "status", "trials", "failed", "best", "started", "finished", "data"):
        table.add_column(column)
    for manifest in result_store.list_runs():
        trials = result_store.list_trials(manifest.run_id)
        done = [t for t in trials if t.done]
        scores = [t.objective for t in done if t.status == "ok" and t.objective is not None]
        table.add_row(
            manifest.run_id,
            manifest.status,
            f"{len(done)}/{manifest.max_evals}",
            str(sum(t.status == "failed" for t in done)),
            f"{max(scores):.4f}" if scores else "-",
            f"{manifest.started:%Y-%m-%d %H:%M}",
            f"{manifest.finished:%H:%M}" if manifest.finished else "-",
            manifest.data_sha256[:12],
        )
    out.print(table)
    damage = check_store(result_store)
    if damage:
        console.print(
            f"{len(damage)} damaged record(s) or stale run(s), skipped: tcr-pipeline store check --store "
            f"{result_store.root}",
            markup=False,
            soft_wrap=True,
        )


@app.command()
def best(store: StoreOption = None) -> None:
    """Show the current best (promoted) model: hyperparameters, metrics, data version, history."""
    result_store = Store.from_env(store)
    registry = result_store.load_registry()
    entry = registry.current_entry
    if entry is None:
        raise InputError(f"{result_store.root}: no promoted model yet (run `tcr-pipeline search`)")
    out.print(f"current best: {entry.model_id}  ({entry.objective_name} {entry.objective:.4f})", markup=False)
    _print_against_baseline(result_store, entry)
    out.print(f"  hyperparameters: {json.dumps(entry.params)}", markup=False)
    out.print(
        f"  data sha256 {entry.data_sha256[:12]}  dvc md5 {entry.dvc_md5}  git {entry.git_commit}",
        markup=False,
    )
    out.print(f"  path: {result_store.root / entry.path}", markup=False)
    for promotion in registry.history:
        out.print(
            f"  {promotion.promoted:%Y-%m-%d %H:%M} {promotion.model_id} replaced {promotion.replaced}: "
            f"{promotion.reason}",
            markup=False,
        )
    kept = [c for c in registry.comparisons if not c.promoted][-3:]
    for comparison in kept:
        out.print(
            f"  {comparison.decided:%Y-%m-%d %H:%M} kept {comparison.current} over {comparison.candidate}: "
            f"{comparison.reason}",
            markup=False,
        )


def _print_against_baseline(result_store: Store, entry: RegistryEntry) -> None:
    """The model's validation and test metrics next to its run's baseline and always-negative."""
    columns = {"val": entry.val_metrics, "test": entry.test_metrics}
    baseline = result_store.load_baseline(entry.run_id)
    if baseline is not None:
        columns["baseline test"] = baseline.get("test", {})
    columns["always negative"] = always_negative(entry.test_metrics)
    out.print(_metrics_table("current best (val: out-of-fold when train.folds > 1)", columns))
    if baseline is not None and "mean_epitope_auc" in baseline.get("test", {}):
        delta = (
            entry.test_metrics.get("mean_epitope_auc", float("nan")) - baseline["test"]["mean_epitope_auc"]
        )
        verdict = "beats" if delta > 0 else "does not beat"
        out.print(
            f"  test mean per-epitope AUC {verdict} the run's k-mer baseline by {delta:+.4f} "
            "(one small test split: see the README's cross-validated comparison for the noise)",
            markup=False,
        )


@app.command()
def monitor(
    store: StoreOption = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labelled CSV of new data: the model's metrics on it vs its test metrics."),
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="Compare the last N logged rows (default: monitor.window).")
    ] = None,
    since_hours: Annotated[float | None, typer.Option(help="Only rows of the last H hours.")] = None,
    model: Annotated[
        str | None, typer.Option(help="A registry id RUN/TRIAL (default: the current model).")
    ] = None,
    reference_data: Annotated[
        Path | None,
        typer.Option(help="The model's training CSV, when its run's data path now holds another version."),
    ] = None,
    params_file: ParamsOption = None,
) -> None:
    """Compare recent queries with the model's training data, write a report, alert; exit 1 on an alert."""
    from flows.monitor import monitor_flow
    from tcr_pipeline.monitoring import EXIT_CODES

    result_store = Store.from_env(store)
    # checked here, before a Prefect server starts
    if not result_store.root.is_dir():
        raise InputError(f"{result_store.root}: no such store directory (pass --store or set TCR_STORE)")
    _params(params_file, {})
    if labels is not None:
        load_pairs(labels)
    with _prefect_server():
        outcome = monitor_flow(
            store=str(result_store.root),
            labels=str(labels) if labels else None,
            window=window,
            since_hours=since_hours,
            model_id=model,
            reference_data=str(reference_data) if reference_data else None,
            params_file=_params_path(params_file),
        )
    out.print(
        f"{outcome['status']}: {len(outcome['alerts'])} alert(s), report {outcome['report']}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for message in outcome["alerts"]:
        out.print(f"  ALERT {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CODES[outcome["status"]])


@app.command()
def predict(
    input_csv: Annotated[Path, typer.Argument(help="CSV of pairs (Label optional; extra columns are kept).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV.")],
    model: Annotated[
        str, typer.Option("--model", help="A bundle directory, `best`, or a registry id RUN/TRIAL.")
    ] = "best",
    store: StoreOption = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log",
            help="Also append every row (input, score or error) to the store's query log, "
            "where the dashboard's queries go ($TCR_QUERY_LOG moves it).",
        ),
    ] = False,
) -> None:
    """Score pairs: every input column plus score, prediction and error (empty when the row was valid).

    The input is read, scored and written $TCR_PREDICT_CHUNK_ROWS rows (default 50,000) at a time
    into a temporary file that replaces the output only when every row is done."""
    chunk_rows = chunk_rows_from_env()
    check_output_target(output, inputs=(input_csv,))
    result_store = Store.from_env(store)
    if log:
        from tcr_pipeline.store.querylog import model_id_for, query_log_path

        log_path = query_log_path(result_store.root)
        if not log_path.parent.is_dir():
            raise InputError(
                f"{log_path.parent}: no such directory for the query log (--log writes to the store's "
                "query log: pass --store or set TCR_STORE)"
            )
        # `best` resolved once: the log names the model that scored, even if another is promoted meanwhile
        model = model_id_for(result_store.root, model)
    bundle = load_bundle(result_store.resolve_model(model))
    started = time.perf_counter()
    summary = predict_file(bundle, input_csv, output, chunk_rows)
    latency_ms = (time.perf_counter() - started) * 1000
    note = (
        f" ({summary.warned} with a warning: something the model never saw in training)"
        if summary.warned
        else ""
    )
    out.print(
        f"scored {summary.rows - summary.invalid} of {summary.rows} rows{note} → {output}", markup=False
    )
    if summary.invalid:
        console.print(f"{summary.invalid} invalid row(s): see the error column", markup=False)
    if log:
        from tcr_pipeline.store.querylog import log_prediction_file

        # logged from the finished output, a chunk at a time, in one transaction: a predict that
        # fails or is interrupted logs nothing, and a million rows need no more memory than a chunk
        request, logged = log_prediction_file(result_store.root, model, output, "cli", latency_ms)
        out.print(f"logged {logged} rows (request {request}) → {log_path}", markup=False)


@app.command()
def baseline(
    params_file: ParamsOption = None,
    data: Annotated[Path | None, typer.Option(help="Raw CSV (default: data.raw).")] = None,
    split: Annotated[
        str | None, typer.Option(help="random, tcr or epitope (default: prepare.split).")
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics", "-o", help="Write metrics JSON here.")
    ] = None,
) -> None:
    """Per-epitope logistic regression on CDR3 2–3-mers + one-hot V/J, on the same split as `prepare`."""
    from tcr_pipeline.baseline import evaluate_baseline
    from tcr_pipeline.files import sha256_file
    from tcr_pipeline.splits import split_pairs

    params = _params(params_file, {"data.raw": str(data) if data else None, "prepare.split": split})
    if metrics_file is not None:
        check_output_target(metrics_file, inputs=(params.data.raw,))
    frame = load_pairs(params.data.raw)
    metrics = evaluate_baseline(frame, split_pairs(frame, params.prepare), params.evaluate.threshold)
    if metrics_file is not None:
        write_json_atomic(metrics_file, {"data_sha256": sha256_file(params.data.raw), **metrics})
    out.print(_metrics_table(f"k-mer logistic regression baseline (split={params.prepare.split})", metrics))


@app.command("dashboard")
def dashboard_command(
    store: StoreOption = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; anything but the loopback address needs a login."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8050,
    auth_file: Annotated[
        Path | None,
        typer.Option(help="File of user:hash lines (default: $TCR_DASHBOARD_AUTH_FILE; none: no login)."),
    ] = None,
) -> None:
    """Serve the web dashboard over a result store: runs, training, class balance, models, predict,
    the query log and monitoring (dashboard/README.md)."""
    result_store = Store.from_env(store)
    if not result_store.root.is_dir():
        raise InputError(
            f"{result_store.root}: no such store directory (pass --store or set TCR_STORE; "
            "`make demo` makes one)"
        )
    try:  # the library must not need dash: the dashboard is an optional extra
        from dashboard.app import run as serve_dashboard
    except ImportError as exc:
        raise InputError(
            f"the dashboard needs the `dashboard` extra ({exc.name} is missing): "
            "pip install 'tcr-pipeline[dashboard]'"
        ) from None
    serve_dashboard(result_store.root, host=host, port=port, auth_file=auth_file)
    if "signal" in _interruption:  # the web server catches the interrupt and returns: still exit 130
        raise typer.Exit(130)


@app.command()
def show(model_dir: Annotated[Path, typer.Argument(help="Model bundle directory.")]) -> None:
    """Print a model bundle's card as JSON."""
    out.print_json(load_card(model_dir).model_dump_json())


store_app = typer.Typer(
    help="Check a result store: damaged records, runs left `running`.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


@store_app.command("check")
def store_check(
    store: StoreOption = None,
    mark: Annotated[
        bool, typer.Option("--mark", help="Record stale `running` runs as `interrupted` (resumable).")
    ] = False,
) -> None:
    """List damaged records and stale runs (`running`, but their process on this host is gone).

    Exit status 0 when there is nothing to report, 1 otherwise (after --mark: 1 only for damage
    that marking does not fix). Damaged records are skipped by every reader; a damaged trial is
    run again when its run is resumed.
    """
    result_store = Store.from_env(store)
    if not result_store.root.is_dir():
        raise InputError(f"{result_store.root}: no such store directory (pass --store or set TCR_STORE)")
    left = 0
    for damage in check_store(result_store):
        if mark and damage.stale and damage.run_id:
            mark_stale(result_store, damage.run_id)
            out.print(f"{damage} → marked interrupted", markup=False, highlight=False, soft_wrap=True)
            continue
        out.print(str(damage), markup=False, highlight=False, soft_wrap=True)
        left += 1
    console.print(f"{result_store.root}: {left or 'no'} problem(s) left", markup=False)
    raise typer.Exit(1 if left else 0)


slurm_app = typer.Typer(help="Cluster profiles and the SLURM job scripts they submit.", no_args_is_help=True)
app.add_typer(slurm_app, name="slurm")


@slurm_app.command("profiles")
def slurm_profiles() -> None:
    """List the cluster profiles (shipped, $TCR_PROFILES, ./profiles/)."""
    from tcr_pipeline.clusters import list_profiles, load_profile

    table = Table(title="cluster profiles")
    for column in ("name", "kind", "description", "file"):
        table.add_column(column)
    for name in list_profiles():
        profile = load_profile(name)
        table.add_row(name, profile.kind, profile.description or "", str(profile.source))
    out.print(table)


@slurm_app.command("script")
def slurm_script(
    profile: Annotated[str, typer.Option("--profile", help="Profile name or YAML path.")] = "slurm-gpu",
) -> None:
    """Print the exact job script dask-jobqueue will submit for a profile (nothing is submitted)."""
    from tcr_pipeline.clusters import load_profile, render_job_script

    out.print(render_job_script(load_profile(profile)), markup=False, highlight=False, soft_wrap=True)


_interruption: dict[str, str] = {}  # the signal that stopped the command, and what became of its work


def _interrupt(signum: int, frame: object) -> None:
    _interruption.setdefault("signal", signal.Signals(signum).name)
    # the Dask cluster is torn down mid-trial now: its comm errors (with tracebacks) say nothing
    # the one closing line does not
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so every command stops the
    same way: temporary files are removed, a search records its run as ``interrupted``, exit 130.

    SIGINT is caught even when the shell started us with it ignored (a background job), so that
    ``kill -INT`` always stops a command.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    """Entry point: run the app, turning bad input into one line on stderr and exit status 2."""
    # Without PREFECT_API_URL the flow commands start a temporary Prefect server; Prefect waits
    # 20 s for it by default, too little on a busy two-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from a lab's server
    _interruption.clear()
    # Prefect drains its event queue at exit with "Still processing items" warnings, which would
    # follow (and bury) the one line a failed command ends with
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    try:
        with _stop_on_signals():
            app()
    except InputError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except InfrastructureError as exc:  # the cluster failed, not the input
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except RuntimeError as exc:
        if "Prefect API" not in str(exc):
            raise
        # the server did not come up (or is unreachable): say so in one line, not a traceback
        console.print(
            f"error: {str(exc).splitlines()[0][:300]} Set PREFECT_API_URL to a running server "
            "(`prefect server start`) or PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except (
        OSError
    ) as exc:  # the system refused (disk full, a read-only filesystem…): one line, not a traceback
        if exc.filename is None:
            raise
        console.print(
            f"error: {exc.filename}: {exc.strerror or exc}", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(1)
    except KeyboardInterrupt:  # typer turns it into exit status 130 itself; this is in case it does not
        _report_interruption()
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:
            _report_interruption()
        raise


def _report_interruption() -> None:
    what = _interruption.get("note", "stopped; no half-written file was left")
    console.print(
        f"interrupted by {_interruption.get('signal', 'SIGINT')}: {what}", markup=False, soft_wrap=True
    )


if __name__ == "__main__":
    main()


__all__ = ["app", "json", "main"]
