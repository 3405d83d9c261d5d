"""The commands of one model, without Prefect: validate, prepare, train, evaluate, predict, baseline, show."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated

import typer

from tcr_cli.options import (
    DataOption,
    ParamsOption,
    StoreOption,
    command_params,
    console,
    metrics_table,
    out,
    progress_bar,
)
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
from tcr_pipeline.data import load_pairs, validate_file
from tcr_pipeline.errors import InfrastructureError, InputError
from tcr_pipeline.files import check_output_files, check_output_target, write_json_atomic, write_text_atomic
from tcr_pipeline.prepare import load_prepared, prepare_dataset
from tcr_pipeline.recipe import fit_and_save
from tcr_pipeline.store import Store
from tcr_pipeline.synthetic import DEFAULT_SOURCE, Options, write_pairs
from tcr_pipeline.training import evaluate_model

PreparedOption = Annotated[Path, typer.Option("--prepared", help="Output of `prepare`.")]
ModelDirOption = Annotated[Path, typer.Option("--model", help="Model bundle directory.")]
MetricsOption = Annotated[Path | None, typer.Option("--metrics", "-o", help="Write metrics JSON here.")]


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


def prepare(
    params_file: ParamsOption = None,
    data: DataOption = None,
    encoding: Annotated[str | None, typer.Option(help="paper or onehot.")] = None,
    split: Annotated[str | None, typer.Option(help="random, tcr or epitope.")] = None,
    clone_id: Annotated[
        bool | None, typer.Option("--clone-id/--no-clone-id", help="Use clone_id as a feature (paper only).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("data/prepared"),
) -> None:
    """Validate, encode and split the raw data into tensors plus a JSON encoder."""
    params = command_params(
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


def train(
    params_file: ParamsOption = None,
    prepared_dir: PreparedOption = Path("data/prepared"),
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
    params = command_params(
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
    with progress_bar("training") as progress:
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
    out.print(metrics_table("validation", {"val": val}))


def evaluate(
    model_dir: ModelDirOption = Path("models/model"),
    prepared_dir: PreparedOption = Path("data/prepared"),
    metrics_file: MetricsOption = None,
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
    out.print(metrics_table(f"{model_dir} (data {prepared.data_sha256[:12]})", metrics))


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
        from tcr_pipeline.store import model_id_for, query_log_path

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
        from tcr_pipeline.store import log_prediction_file

        # logged from the finished output, a chunk at a time, in one transaction: a predict that
        # fails or is interrupted logs nothing, and a million rows need no more memory than a chunk
        try:
            request, logged = log_prediction_file(result_store.root, model, output, "cli", latency_ms)
        except sqlite3.Error as exc:  # its disk full ("disk I/O error"), read-only, locked: one line
            raise InfrastructureError(
                f"{log_path}: the query log was not written ({exc}; is its disk full or read-only?); "
                f"nothing was logged, the scores are in {output}"
            ) from None
        out.print(f"logged {logged} rows (request {request}) → {log_path}", markup=False)


def baseline(
    params_file: ParamsOption = None,
    data: DataOption = None,
    split: Annotated[
        str | None, typer.Option(help="random, tcr or epitope (default: prepare.split).")
    ] = None,
    metrics_file: MetricsOption = None,
) -> None:
    """Per-epitope logistic regression on CDR3 2–3-mers + one-hot V/J, on the same split as `prepare`."""
    from tcr_pipeline.baseline import evaluate_baseline
    from tcr_pipeline.files import sha256_file
    from tcr_pipeline.splits import split_pairs

    params = command_params(params_file, {"data.raw": str(data) if data else None, "prepare.split": split})
    if metrics_file is not None:
        check_output_target(metrics_file, inputs=(params.data.raw,))
    frame = load_pairs(params.data.raw)
    metrics = evaluate_baseline(frame, split_pairs(frame, params.prepare), params.evaluate.threshold)
    if metrics_file is not None:
        write_json_atomic(metrics_file, {"data_sha256": sha256_file(params.data.raw), **metrics})
    out.print(metrics_table(f"k-mer logistic regression baseline (split={params.prepare.split})", metrics))


def show(model_dir: Annotated[Path, typer.Argument(help="Model bundle directory.")]) -> None:
    """Print a model bundle's card as JSON."""
    out.print_json(load_card(model_dir).model_dump_json())


def synth(
    rows: Annotated[int, typer.Option(help="Rows to write (1M–10M for benchmarks).")],
    out: Annotated[Path, typer.Option(help="The CSV file to write.")],
    seed: Annotated[int, typer.Option(help="The same seed, source and options write the same file.")] = 0,
    epitopes: Annotated[int, typer.Option(help="Distinct epitopes: the source's and mutants.")] = 1000,
    negatives: Annotated[int, typer.Option(help="Negative pairs per receptor (positive rate 1/(1+n)).")] = 13,
    signal: Annotated[float, typer.Option(help="Share of receptors that carry their epitope's motif.")] = 0.8,
    source: Annotated[
        Path, typer.Option(help="The pair table lengths, genes and epitopes are drawn from.")
    ] = (DEFAULT_SOURCE),
) -> None:
    """Write synthetic pairs shaped like a real pair table, for benchmarks (see README "Data")."""
    check_output_target(out, inputs=(source,))
    options = Options(rows=rows, seed=seed, epitopes=epitopes, negatives=negatives, signal=signal)
    try:
        with progress_bar("synth") as progress:
            bar = progress.add_task("synth", total=rows, info=str(out))
            write_pairs(out, options, source, lambda added: progress.advance(bar, added))
    except OSError as exc:  # the disk filled up, say: one line naming the output (nothing is left)
        raise OSError(exc.errno, exc.strerror or str(exc), str(out)) from None
    console.print(f"{out}: {rows} rows", markup=False)
