"""The search library: conditional spaces, the TPE driver's seeding and resume, trials, promotion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tcr_pipeline.bundle import ModelCard, load_bundle, predict_frame, save_bundle
from tcr_pipeline.config import (
    Dimension,
    EvaluateParams,
    ModelParams,
    PrepareParams,
    SearchParams,
    TrainParams,
)
from tcr_pipeline.data import load_pairs
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.models import build_model
from tcr_pipeline.prepare import Prepared, encode_pairs, prepare_dataset
from tcr_pipeline.promotion import promote_best, register_top
from tcr_pipeline.search import SearchDriver, Suggestion, flatten_point
from tcr_pipeline.search_run import close_run, open_run
from tcr_pipeline.store import RunManifest, Store, TrialRecord
from tcr_pipeline.trials import run_batch, run_trial

SPACE = {
    "model.kind": Dimension(
        branches={
            "kmer": {
                "lr": Dimension(loguniform=(1e-3, 0.05)),
                "model.head": Dimension(choice=["softmax", "sigmoid"]),
            },
            "cnn": {"lr": Dimension(loguniform=(1e-4, 0.01)), "model.cnn_filters": Dimension(choice=[4, 8])},
        }
    ),
    "epochs": Dimension(integer=(2, 4)),
}
EVALUATE = EvaluateParams(objective="mean_epitope_auc")


@pytest.fixture(scope="module")
def aligned(small_csv: Path) -> Prepared:
    return encode_pairs(load_pairs(small_csv), PrepareParams(encoding="aligned"), sha256_file(small_csv))


def _finish(driver: SearchDriver, trial_id: int, vals: dict, params: dict, objective: float) -> TrialRecord:  # type: ignore[type-arg]
    record = TrialRecord(
        run_id="r", trial_id=trial_id, attempt="a", status="ok", objective=objective, params=params,
        hyperopt_vals=vals,
    )  # fmt: skip
    driver.finish(record)
    return record


def test_a_conditional_space_gives_each_kind_its_own_hyperparameters() -> None:
    driver = SearchDriver(SearchParams(space=SPACE, n_startup=3, seed=1))
    kinds = set()
    for _ in range(8):
        trial_id, vals, params = driver.suggest()
        kinds.add(params["model.kind"])
        expected = {"kmer": {"lr", "model.head"}, "cnn": {"lr", "model.cnn_filters"}}[params["model.kind"]]
        assert set(params) == {"model.kind", "epochs", *expected}
        inactive = "cnn" if params["model.kind"] == "kmer" else "kmer"
        assert all(not v for k, v in vals.items() if k.startswith(f"{inactive}/"))
        _finish(driver, trial_id, vals, params, float(np.random.default_rng(trial_id).random()))
    assert kinds == {"kmer", "cnn"}
    assert flatten_point({"a": {"a": "x", "b": np.float64(1.5)}, "c": 2}) == {"a": "x", "b": 1.5, "c": 2}


def test_the_same_seed_suggests_the_same_trials_and_another_seed_does_not() -> None:
    def first_points(seed: int) -> list[dict]:  # type: ignore[type-arg]
        driver = SearchDriver(SearchParams(space=SPACE, n_startup=3, seed=seed))
        points = []
        for _ in range(5):  # startup trials, then TPE
            trial_id, vals, params = driver.suggest()
            _finish(driver, trial_id, vals, params, 0.1 * trial_id)
            points.append(params)
        return points

    assert first_points(7) == first_points(7)
    assert first_points(7) != first_points(8)


def test_a_driver_rebuilt_from_the_store_continues_like_the_original() -> None:
    """Resume: TPE state is rebuilt from trial records (finished and interrupted) alone."""
    params = SearchParams(space=SPACE, n_startup=2, seed=3)
    original = SearchDriver(params)
    records = []
    for i in range(5):
        trial_id, vals, hyper = original.suggest()
        records.append(_finish(original, trial_id, vals, hyper, [0.3, 0.9, 0.5, 0.7, 0.6][i]))
    trial_id, vals, hyper = original.suggest()  # in flight when the process died
    records.append(TrialRecord(run_id="r", trial_id=trial_id, attempt="b", params=hyper, hyperopt_vals=vals))
    rebuilt = SearchDriver(params)
    for record in records:
        rebuilt.restore(record)
    assert rebuilt.next_trial_id == original.next_trial_id == 6
    assert rebuilt.suggest() == original.suggest()
    losses = sorted(t["result"].get("loss", np.inf) for t in rebuilt.trials.trials if t["result"])
    assert losses[:5] == pytest.approx([-0.9, -0.7, -0.6, -0.5, -0.3])


def test_a_batch_is_drawn_with_its_pending_members_as_the_worst_trials() -> None:
    """Constant liar: each member of a batch is suggested with the members before it (and the
    batches in flight) pending, which hyperopt's TPE counts as infinitely bad; a batch is the
    same draws as one ``suggest`` at a time."""
    params = SearchParams(space=SPACE, n_startup=3, seed=5)
    batched, single = SearchDriver(params), SearchDriver(params)
    records = []
    for driver in (batched, single):
        for _ in range(4):
            trial_id, vals, hyper = driver.suggest()
            records.append(_finish(driver, trial_id, vals, hyper, [0.3, 0.9, 0.5, 0.7][trial_id]))
    batch = batched.suggest_batch(3)
    assert [m.trial_id for m in batch] == [4, 5, 6]
    assert all(isinstance(m, Suggestion) for m in batch)
    assert [single.suggest() for _ in range(3)] == batch
    pending = [t for t in batched.trials.trials if t["tid"] in (4, 5, 6)]
    assert all(t["result"].get("loss") is None for t in pending)  # tpe.suggest reads None as +inf
    # trial 5 drawn with the same seed but without trial 4 pending is another point
    alone = SearchDriver(params)
    for record in records[:4]:
        alone.restore(record)
    docs = alone.algo([5], alone.domain, alone.trials, alone.seed + 5)
    assert {k: list(v) for k, v in docs[0]["misc"]["vals"].items()} != batch[1].vals


def _bundle(root: Path, name: str, prepared: Prepared, scores: np.ndarray, rows: torch.Tensor) -> Path:
    """A bundle with given validation scores (its weights are an untrained k-mer model)."""
    params = ModelParams(kind="kmer")
    model = build_model(prepared.features.shape[1], params, prepared.encoder.input_spec())
    card = ModelCard(
        input_dim=int(prepared.features.shape[1]), model=params, train_params={},
        prepare_params=prepared.meta["params"], data_sha256=prepared.data_sha256,
        input_spec=prepared.encoder.input_spec(),
    )  # fmt: skip
    return save_bundle(root / name, model, prepared.encoder, card, (rows, torch.from_numpy(scores).float()))


def test_promotion_needs_a_win_beyond_the_noise(tmp_path: Path, aligned: Prepared) -> None:
    store = Store(tmp_path / "store")
    rows = torch.arange(len(aligned.labels))  # validation rows of all 40 TCRs (say, out of fold)
    labels = aligned.labels[rows].numpy()
    rng = np.random.default_rng(0)
    weak = rng.random(len(rows)) + 0.3 * labels
    runs = {
        "first": weak,
        "tie": weak + 0.3 * labels * np.where(rng.random(len(rows)) < 0.5, 1, -1),  # better on half
        "better": labels + 0.01 * rng.random(len(rows)),
    }
    entries = {}
    for run, scores in runs.items():
        store.write_manifest(RunManifest(run_id=run, max_evals=1, parallelism=1))
        record = TrialRecord(  # each run its own (made-up) hyperparameters: three different models
            run_id=run, trial_id=0, attempt="a", status="ok", objective=0.5, params={"run": run}
        )
        store.write_trial(record)
        _bundle(store.model_dir(record).parent, store.model_dir(record).name, aligned, scores, rows)
        entries[run] = register_top(store, run, 1, "mean_epitope_auc")
    assert promote_best(store, entries["first"], aligned, EVALUATE).reason == "first model"  # type: ignore[union-attr]

    assert promote_best(store, entries["tie"], aligned, EVALUATE) is None  # inside the noise: kept
    registry = store.load_registry()
    assert registry.current == entries["first"][0].model_id
    refused = registry.comparisons[-1]
    assert not refused.promoted
    assert refused.interval["low"] < 0 < refused.interval["high"]
    assert refused.interval["resamples"] >= 1000
    assert "inside the noise" in refused.reason

    promotion = promote_best(store, entries["better"], aligned, EVALUATE)
    assert promotion is not None
    assert promotion.interval is not None
    assert promotion.interval["low"] > 0
    assert "the same" in promotion.reason  # compared on the same held-out rows
    assert store.load_registry().current == entries["better"][0].model_id

    forced = promote_best(store, entries["tie"], aligned, EVALUATE, force=True)
    assert forced is not None
    assert forced.reason.startswith("forced: ")


def test_a_kmer_trial_is_recorded_promoted_and_served(
    tmp_path: Path, aligned: Prepared, small_csv: Path
) -> None:
    """The baseline-equivalent linear model is a candidate: trained, registered, promoted, served."""
    from tcr_pipeline.prepare import prepare_dataset

    prepared_dir = tmp_path / "prepared"
    prepare_dataset(small_csv, PrepareParams(encoding="aligned"), prepared_dir)
    store = Store(tmp_path / "store")
    store.write_manifest(RunManifest(run_id="k", max_evals=1, parallelism=1))
    train = TrainParams(model=ModelParams(kind="kmer"), epochs=3, batch_size=64, device="cpu", folds=2)
    hyper = {"model.kind": "kmer", "model.head": "sigmoid", "lr": 0.02}
    record = run_trial(store, "k", 0, {}, hyper, prepared_dir, train, EVALUATE)
    assert record.status == "ok", record.error
    assert record.folds == 2
    assert record.best_epoch is not None
    entries = register_top(store, "k", 1, EVALUATE.objective)
    assert promote_best(store, entries, aligned, EVALUATE) is not None
    bundle = load_bundle(store.resolve_model("best"))
    assert bundle.card.members == 2
    frame = load_pairs(small_csv).head(3)
    frame.loc[1, "CDR3_beta"] = "CASS" + "LGQ" * 7 + "F"  # 26 residues: scored
    frame.loc[2, "Epitope"] = "SIINFEKLV"  # no training data: refused
    out = predict_frame(bundle, frame)
    assert out["error"].iloc[0] == out["error"].iloc[1] == ""
    assert float(out["score"].iloc[1]) >= 0
    assert "has no training data" in out["error"].iloc[2]
    assert out["score"].iloc[2] == ""
    assert "never seen" in out["warning"].iloc[1]  # residues at frame positions never seen


def test_an_old_bundle_still_loads_and_predicts(
    tmp_path: Path, small_prepared: Prepared, small_csv: Path
) -> None:
    """A bundle written before input_spec/members existed (one-hot encoding, paper network)."""
    params = ModelParams(kind="small", small_widths=(8, 4))
    model = build_model(small_prepared.features.shape[1], params)
    card = ModelCard(
        input_dim=int(small_prepared.features.shape[1]), model=params, train_params={}, data_sha256="x"
    )
    path = save_bundle(tmp_path / "old", model, small_prepared.encoder, card)
    raw = (path / "card.json").read_text()
    for field in ('"input_spec"', '"members"', '"best_epoch"'):
        assert field in raw
    old = pd.read_json(path / "card.json", typ="series").drop(["input_spec", "members", "best_epoch"])
    (path / "card.json").write_text(old.to_json())
    bundle = load_bundle(path)
    out = predict_frame(bundle, load_pairs(small_csv).head(4))
    assert (out["error"] == "").all()
    assert (out["warning"] == "").all()


def test_a_batch_trains_its_members_once_and_records_its_name_and_device(
    tmp_path: Path, small_csv: Path
) -> None:
    from tcr_pipeline.prepare import prepare_dataset

    prepared_dir = tmp_path / "prepared"
    prepare_dataset(small_csv, PrepareParams(encoding="aligned"), prepared_dir)
    store = Store(tmp_path / "store")
    store.write_manifest(RunManifest(run_id="b", max_evals=2, parallelism=1))
    train = TrainParams(model=ModelParams(kind="kmer"), epochs=2, batch_size=64, device="cpu")
    members = [
        Suggestion(0, {}, {"model.kind": "kmer", "lr": 0.02}),
        Suggestion(1, {}, {"model.kind": "kmer", "model.head": "none"}),  # invalid: a failed trial
    ]
    records = run_batch(store, "b", "b0000-x", members, prepared_dir, train, EVALUATE)
    assert [(r.trial_id, r.status) for r in records] == [(0, "ok"), (1, "failed")]
    assert all(r.batch == "b0000-x" and r.device == "cpu" for r in records)
    assert records[0].started < records[1].started  # one after the other, each timed alone
    again = run_batch(store, "b", "b0000-y", members, prepared_dir, train, EVALUATE)
    assert [r.attempt for r in again] == [r.attempt for r in records]  # finished: never run twice
    assert [r.batch for r in store.list_trials("b")] == ["b0000-x", "b0000-x"]


def test_a_vectorised_batch_records_what_training_its_members_one_by_one_records(
    tmp_path: Path, small_csv: Path
) -> None:
    from tcr_pipeline.bundle import load_bundle

    prepared_dir = tmp_path / "prepared"
    prepare_dataset(small_csv, PrepareParams(encoding="aligned"), prepared_dir)
    train = TrainParams(model=ModelParams(kind="kmer"), epochs=3, batch_size=64, device="cpu", folds=2)
    members = [
        Suggestion(0, {}, {"model.kind": "kmer", "lr": 0.02}),
        Suggestion(1, {}, {"model.kind": "kmer", "lr": 0.005, "weight_decay": 1e-4}),
        Suggestion(2, {}, {"model.kind": "kmer", "lr": 0.01, "epochs": 2}),
    ]
    runs = {}
    for vectorise in (True, False):
        store = Store(tmp_path / f"store-{vectorise}")
        store.write_manifest(RunManifest(run_id="b", max_evals=3, parallelism=1))
        runs[vectorise] = (
            store,
            run_batch(store, "b", "b0000-x", members, prepared_dir, train, EVALUATE, vectorise),
        )
    (together_store, together), (alone_store, alone) = runs[True], runs[False]
    assert [r.status for r in together] == ["ok"] * 3
    assert [len(r.history) for r in together] == [3, 3, 2]  # each member's own epochs (fold means)
    # together: all three were started before the first finished; alone: one after the other
    assert max(r.started for r in together) < min(r.finished or r.started for r in together)
    assert alone[0].finished is not None
    assert alone[0].finished <= alone[1].started
    for a, b in zip(together, alone, strict=True):
        assert a.objective == pytest.approx(b.objective, abs=0.02)
        assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-3)
        assert (a.batch, a.folds, a.best_epoch) == (b.batch, b.folds, b.best_epoch)
        bundle = load_bundle(together_store.model_dir(a))  # an ordinary bundle, as trained alone
        assert bundle.card.members == 2
    assert load_bundle(alone_store.model_dir(alone[0])).card.members == 2


def test_a_run_is_opened_new_or_resumed_and_closed(tmp_path: Path, aligned: Prepared) -> None:
    from tcr_pipeline.config import Params

    store = Store(tmp_path / "store")
    params = Params()
    run = open_run(store, None, params, aligned, "prepared")
    assert not run.resumed
    assert run.params.search.seed is not None  # drawn, and recorded
    manifest = store.load_manifest(run.manifest.run_id)
    assert manifest is not None
    assert (manifest.status, manifest.seed, manifest.data_sha256) == (
        "running", run.params.search.seed, aligned.data_sha256
    )  # fmt: skip
    close_run(store, run.manifest, "interrupted", KeyboardInterrupt())
    asked = params.model_copy(update={"search": params.search.model_copy(update={"seed": 1})})
    again = open_run(store, run.manifest.run_id, asked, aligned, "prepared")
    assert again.resumed
    assert again.params.search.seed == run.params.search.seed  # a resumed run keeps its seed
    assert again.warnings
    assert "keeps its seed" in again.warnings[0]
    assert store.load_manifest(run.manifest.run_id).status == "running"  # type: ignore[union-attr]
    # a resume that changed the search space or the training settings would mix two searches
    from tcr_pipeline.config import Dimension

    space = {**params.search.space, "lr": Dimension(loguniform=(1e-4, 1e-3))}
    for changed, what in (
        (
            params.model_copy(update={"search": params.search.model_copy(update={"space": space})}),
            "search.space",
        ),
        (params.model_copy(update={"train": params.train.model_copy(update={"epochs": 99})}), "train"),
    ):
        with pytest.raises(InputError, match=f"started with other {what} settings"):
            open_run(store, run.manifest.run_id, changed, aligned, "prepared")
    on_gpu = params.model_copy(update={"train": params.train.model_copy(update={"device": "cuda"})})
    assert open_run(store, run.manifest.run_id, on_gpu, aligned, "prepared").resumed  # other hardware: fine
    close_run(store, again.manifest, "completed")
    assert store.load_manifest(run.manifest.run_id).status == "completed"  # type: ignore[union-attr]
    other = store.load_manifest(run.manifest.run_id).model_copy(update={"data_sha256": "0" * 64})  # type: ignore[union-attr]
    store.write_manifest(other)
    with pytest.raises(InputError, match="was started on data"):
        open_run(store, run.manifest.run_id, params, aligned, "prepared")
