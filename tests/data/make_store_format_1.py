"""How ``tests/data/store-format-1/`` was made: a store in format 1 (records with no
``format_version``), written by the code of commit 06f2827, before the store package existed.

Run it from a checkout of that commit (``PYTHONPATH=CHECKOUT python make_store_format_1.py OUT``):
run with newer code it writes the newer format. It runs a real small search (2 trials, as the
dashboard's test fixture does), adds a failed trial (a bad model kind: its ``traceback`` is
recorded) and a trial still running, promotes the second model with a bootstrap interval, logs
queries, then drops what the readers do not need and the fixture cannot afford (weights,
validation scores, prepared data).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT / "tests"))

from dashboard_fixtures import finish_run, run_small_search, small_prepared  # noqa: E402

from tcr_pipeline.bundle import load_bundle, predict_frame  # noqa: E402
from tcr_pipeline.config import EvaluateParams, ModelParams, TrainParams  # noqa: E402
from tcr_pipeline.prepare import load_prepared  # noqa: E402
from tcr_pipeline.querylog import log_prediction  # noqa: E402
from tcr_pipeline.search import promote_best, run_trial  # noqa: E402
from tcr_pipeline.store import Store, TrialRecord, new_attempt_id  # noqa: E402


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        prepared_dir = small_prepared(base / "data", tcrs=40)
        search = run_small_search(base / "store", prepared_dir, trials=2)
        store = Store(search.root)
        train = TrainParams(
            model=ModelParams(kind="small", small_widths=(32, 16)), batch_size=256, device="cpu"
        )
        failed = run_trial(
            store,
            search.run_id,
            2,
            {"model.kind": [9]},
            {"model.kind": "no-such-kind"},
            prepared_dir,
            train,
            EvaluateParams(),
        )
        assert failed.status == "failed"
        assert (failed.model_extra or {}).get("traceback")
        running = TrialRecord(run_id=search.run_id, trial_id=3, attempt=new_attempt_id(), params={"lr": 0.01})
        store.write_trial(running)
        finish_run(search)
        registry = store.load_registry()
        other = [e for e in registry.models if e.model_id != registry.current]
        promote_best(store, other, load_prepared(prepared_dir), EvaluateParams(), force=True, resamples=200)
        rows = pd.read_csv(prepared_dir.parent / "small.csv", dtype=str, keep_default_na=False).head(5)
        result = predict_frame(load_bundle(store.resolve_model("best")), rows.drop(columns=["Label"]))
        model_id = store.load_registry().current or "best"
        log_prediction(store.root, model_id, result, source="cli", latency_ms=1.5)
        for name in ("weights.pt", "validation.pt"):
            for path in store.root.glob(f"runs/*/trials/*/*/model/{name}"):
                path.unlink()
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(store.root, out, ignore=shutil.ignore_patterns(".registry.lock"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
