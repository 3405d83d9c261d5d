#!/usr/bin/env python
"""Peak memory and rows/s of `tcr-pipeline predict` (streaming) against scoring all rows at once.

1. Writes ``--rows`` (default 1,000,000) valid rows resampled with replacement from the shipped
   ``data/raw/viral_pairs.csv`` (seed 0), and trains a small bundle on the shipped file (default
   encoding, the ``small`` model, ``--epochs`` epochs, CPU), or uses ``--bundle``.
2. **Streaming**: the real ``tcr-pipeline predict`` in a subprocess, reading, scoring and writing
   ``--chunk-rows`` rows at a time (``$TCR_PREDICT_CHUNK_ROWS``).
3. **All at once**: the same command with the path ``predict_file`` took before streaming
   (``read_table`` of the whole file, one ``predict_frame``, one ``to_csv`` into
   ``write_atomic``) put in its place, in a subprocess of this script that runs the CLI's
   ``main``: the same interpreter start, imports, checks and summary line.

Each process's peak resident memory is its own ``ru_maxrss`` (``os.wait4``: the child's, not
this script's); rows/s is rows over the process's wall time, and rows per CPU-second rows over
its user + system time (less disturbed by other processes on a loaded machine). The two
outputs must be identical (sha256). Both run ``--repeats`` times, alternating; the median is reported.

Run ``python bench/predict_memory.py --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from tcr_pipeline.bundle import Bundle, PredictSummary

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RAW = ROOT / "data" / "raw" / "viral_pairs.csv"
DEFAULT_OUT = ROOT / "bench" / "results" / "predict_memory.json"
TARGET_PEAK_BYTES = 1 << 30  # 1 GiB for 1,000,000 rows


def predict_file_all_at_once(
    bundle: Bundle, source: Path | str, target: Path | str, chunk_rows: int | None = None
) -> PredictSummary:
    """What ``predict_file`` did before streaming: the whole table in memory at every step."""
    from tcr_pipeline.bundle import PredictSummary, predict_frame
    from tcr_pipeline.data import read_table
    from tcr_pipeline.files import write_atomic

    result = predict_frame(bundle, read_table(source), str(source))
    write_atomic(target, lambda tmp: result.to_csv(tmp, index=False))
    return PredictSummary(
        len(result), int((result["error"] != "").sum()), int((result["warning"] != "").sum())
    )


def run_cli_all_at_once(args: list[str]) -> None:
    """``tcr-pipeline ARGS`` with ``predict_file`` replaced by :func:`predict_file_all_at_once`:
    the same process, imports, checks and summary line as the streaming command."""
    from tcr_cli import main, model_commands

    model_commands.predict_file = predict_file_all_at_once  # type: ignore[assignment]
    sys.argv = ["tcr-pipeline", *args]
    main.main()


def make_rows(raw: Path, rows: int, path: Path) -> None:
    """``rows`` rows resampled with replacement from ``raw`` (all valid), written to ``path``."""
    frame = pd.read_csv(raw, dtype=str, keep_default_na=False)
    frame.sample(n=rows, replace=True, random_state=0).to_csv(path, index=False)


def train_bundle(raw: Path, out: Path, epochs: int) -> None:
    """A small model on ``raw``: default preparation (aligned encoding, TCR split), ``small`` model."""
    from tcr_pipeline.config import EvaluateParams, ModelParams, PrepareParams, TrainParams
    from tcr_pipeline.data import load_pairs
    from tcr_pipeline.files import sha256_file
    from tcr_pipeline.prepare import encode_pairs
    from tcr_pipeline.recipe import fit_and_save

    prepared = encode_pairs(load_pairs(raw), PrepareParams(), sha256_file(raw))
    train = TrainParams(model=ModelParams(kind="small"), epochs=epochs, seed=0, device="cpu")
    fit_and_save(prepared, train, EvaluateParams(), out, splits=("val",))


def run_measured(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command``; its wall time and its own peak resident memory (``ru_maxrss``, KiB on Linux)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:  # no pipe to fill up
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {stderr[-2000:]}")
    return {
        "wall_s": wall,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "user_s": usage.ru_utime,
        "system_s": usage.ru_stime,
        "stdout": stdout.strip(),
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def measure(
    rows: int, chunk_rows: int, repeats: int, raw: Path, bundle: Path, workdir: Path, threads: int | None
) -> dict[str, Any]:
    """Both paths on ``rows`` rows, alternating, ``repeats`` times each."""
    source = workdir / f"pairs_{rows}.csv"
    make_rows(raw, rows, source)
    script = Path(sys.executable).with_name("tcr-pipeline")  # the installed console script
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "tcr_cli"]
    outputs = {"streaming": workdir / "streamed.csv", "all_at_once": workdir / "all_at_once.csv"}
    commands = {
        "streaming": [
            *launcher,
            "predict",
            str(source),
            "-o",
            str(outputs["streaming"]),
            "--model",
            str(bundle),
        ],
        "all_at_once": [
            sys.executable,
            str(Path(__file__).resolve()),
            "--all-at-once-cli",
            "predict",
            str(source),
            "-o",
            str(outputs["all_at_once"]),
            "--model",
            str(bundle),
        ],
    }
    env = {**os.environ, "TCR_PREDICT_CHUNK_ROWS": str(chunk_rows)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for repeat in range(repeats):
        for name, command in commands.items():
            run = run_measured(command, env)
            runs[name].append(run)
            print(
                f"{rows:>9,} rows  {name:<12} repeat {repeat + 1}: {run['wall_s']:6.1f} s, "
                f"{rows / run['wall_s']:8,.0f} rows/s, CPU {run['user_s'] + run['system_s']:6.1f} s, "
                f"peak RSS {run['peak_rss_bytes'] / 2**20:8,.0f} MiB",
                flush=True,
            )
    hashes = {name: sha256(path) for name, path in outputs.items()}
    out: dict[str, Any] = {
        "rows": rows,
        "chunk_rows": chunk_rows,
        "input_bytes": source.stat().st_size,
        "outputs_identical": len(set(hashes.values())) == 1,
        "output_sha256": hashes,
    }
    for name, command in commands.items():
        walls = [r["wall_s"] for r in runs[name]]
        peaks = [r["peak_rss_bytes"] for r in runs[name]]
        cpu = [r["user_s"] + r["system_s"] for r in runs[name]]
        out[name] = {
            "command": " ".join(command),
            "runs": runs[name],
            "wall_s_median": statistics.median(walls),
            "rows_per_s": rows / statistics.median(walls),
            "cpu_s_median": statistics.median(cpu),
            "rows_per_cpu_s": rows / statistics.median(cpu),
            "peak_rss_bytes_max": max(peaks),
        }
    out["rows_per_s_ratio"] = out["streaming"]["rows_per_s"] / out["all_at_once"]["rows_per_s"]
    # CPU time is what the load of other processes disturbs least (wall time waits for the CPUs)
    out["rows_per_cpu_s_ratio"] = out["streaming"]["rows_per_cpu_s"] / out["all_at_once"]["rows_per_cpu_s"]
    out["peak_rss_ratio"] = out["streaming"]["peak_rss_bytes_max"] / out["all_at_once"]["peak_rss_bytes_max"]
    for path in (source, *outputs.values()):
        path.unlink(missing_ok=True)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        default="1000000",
        help="rows to score, comma-separated for several sizes (default 1000000)",
    )
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="streaming chunk (default 50000)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each path per size (default 1)")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of both processes (default: torch's)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the small bundle (default 2)")
    parser.add_argument("--bundle", type=Path, default=None, help="use this bundle instead of training one")
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="CSV to resample and train on")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20,000 rows in chunks of 5,000")
    parser.add_argument("--all-at-once-cli", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.chunk_rows, args.epochs = "20000", 5_000, 1
    args.rows = [int(r) for r in str(args.rows).split(",") if r.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.all_at_once_cli is not None:
        run_cli_all_at_once(args.all_at_once_cli)
        return 0
    import torch
    from harness import load_at_start, machine_info, results_header, write_results

    started = time.perf_counter()
    load_before = load_at_start(print)
    info = machine_info(
        memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        torch=torch.__version__,
        pandas=pd.__version__,
    )
    print(f"machine: {info}")
    with tempfile.TemporaryDirectory(prefix="tcr-predict-memory-") as tmp:
        workdir = Path(tmp)
        bundle = args.bundle
        if bundle is None:
            bundle = workdir / "model"
            train_bundle(args.raw, bundle, args.epochs)
        sizes = [
            measure(n, args.chunk_rows, args.repeats, args.raw, bundle, workdir, args.threads)
            for n in args.rows
        ]
    largest = max(sizes, key=lambda s: s["rows"])
    targets = {
        "outputs_identical": all(s["outputs_identical"] for s in sizes),
        "streaming_peak_rss_under_1GiB": largest["rows"] >= 1_000_000
        and largest["streaming"]["peak_rss_bytes_max"] <= TARGET_PEAK_BYTES,
        "streaming_rows_per_s_not_worse": all(s["rows_per_s_ratio"] >= 1.0 for s in sizes),
    }
    print(f"targets: {targets}")
    results = {**results_header("predict_memory", info, args), "sizes": sizes, "targets": targets}
    write_results(args.out, results, load_before, started, print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
