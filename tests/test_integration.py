"""End to end through the command line: prepare → train → evaluate → predict, whole shipped CSV.

The pipelines are ``PIPELINES`` in cli_process_fixtures.py, each in its own working directory
without a params.yaml (so the library defaults apply):

``paper``    paper encoding, random split, clone_id as a feature, small model; every stage a
             real ``python -m tcr_cli`` process (started with the session, as each
             process spends seconds importing torch)
``default``  one-hot encoding, split by TCR, medium model; every stage through the same entry
             point, ``tcr_cli.main.main``, in-process
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import torch

from tcr_pipeline.bundle import ModelCard, build_card_model, load_bundle, predict_frame

if TYPE_CHECKING:
    from cli_process_fixtures import PipelineRun

PIPELINE_NAMES = ("paper", "default")
BAD_ROW = 2  # cli_process_fixtures.PREDICT_BAD_ROW: CDR3β CASSX1F


@pytest.fixture(params=PIPELINE_NAMES)
def pipeline(request: pytest.FixtureRequest, cli_pipelines: dict[str, PipelineRun]) -> PipelineRun:
    run = cli_pipelines[request.param]
    for stage, result in run.results.items():
        assert result.code == 0, f"{run.spec.name}/{stage} exited {result.code}:\n{result.output}"
    assert list(run.results) == ["prepare", "train", "evaluate", "predict"]
    return run


def _card(run: PipelineRun) -> dict:
    return json.loads(run.path("model", "card.json").read_text())


def test_no_stage_prints_a_traceback(pipeline: PipelineRun) -> None:
    for stage, result in pipeline.results.items():
        assert "Traceback" not in result.output, stage


def test_prepare_encodes_and_splits_as_asked(pipeline: PipelineRun) -> None:
    spec = pipeline.spec
    meta = json.loads(pipeline.path("prepared", "meta.json").read_text())
    assert meta["params"]["encoding"] == spec.encoding
    assert meta["params"]["split"] == spec.split
    assert meta["params"]["use_clone_id"] is spec.use_clone_id
    assert meta["rows"] == 8932
    assert meta["feature_dim"] == spec.dim
    counts = meta["class_counts"]
    assert sum(c["positive"] for c in counts.values()) == 638
    assert sum(c["positive"] + c["negative"] for c in counts.values()) == 8932
    assert all(c["positive"] > 0 and c["negative"] > 0 for c in counts.values())
    tensors = torch.load(pipeline.path("prepared", "dataset.pt"), weights_only=True)
    assert tensors["features"].shape == (8932, spec.dim)
    stdout = pipeline.results["prepare"].stdout
    assert f"prepared 8932 rows ({spec.encoding}, split={spec.split}" in stdout


def test_model_card_records_the_raw_data(pipeline: PipelineRun, shipped_csv: Path) -> None:
    card = _card(pipeline)
    assert card["data_sha256"] == hashlib.sha256(shipped_csv.read_bytes()).hexdigest()
    assert card["input_dim"] == pipeline.spec.dim
    assert card["model"]["kind"] == pipeline.spec.model
    assert card["prepare_params"]["encoding"] == pipeline.spec.encoding
    assert card["prepare_params"]["use_clone_id"] is pipeline.spec.use_clone_id
    assert card["train_params"]["epochs"] == 2
    assert [r["epoch"] for r in card["history"]] == [1, 2]
    assert "val" in card["metrics"]


def test_weights_load_without_unpickling(pipeline: PipelineRun) -> None:
    state = torch.load(pipeline.path("model", "weights.pt"), weights_only=True)
    assert state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model = build_card_model(ModelCard.model_validate(_card(pipeline)))
    model.load_state_dict(state)  # strict: exactly the architecture the card describes


def test_evaluate_writes_metrics_and_leaves_the_bundle_alone(pipeline: PipelineRun) -> None:
    metrics = json.loads(pipeline.path("metrics.json").read_text())
    meta = json.loads(pipeline.path("prepared", "meta.json").read_text())
    assert metrics["data_sha256"] == _card(pipeline)["data_sha256"]
    for split in ("val", "test"):
        counts = meta["class_counts"][split]
        assert metrics[split]["n"] == counts["positive"] + counts["negative"]
        assert metrics[split]["tp"] + metrics[split]["fn"] == counts["positive"]
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0
        assert 0.0 <= metrics[split]["roc_auc"] <= 1.0
    assert pipeline.path("model", "card.json").read_bytes() == pipeline.card_after_train
    assert "paper_objective" in pipeline.results["evaluate"].stdout


def test_predict_scores_good_rows_and_reports_the_bad_one(pipeline: PipelineRun) -> None:
    source = pd.read_csv(pipeline.path("input.csv"), dtype=str, keep_default_na=False)
    scored = pd.read_csv(pipeline.path("scores.csv"), dtype=str, keep_default_na=False)
    assert list(scored.columns) == [*source.columns, "score", "prediction", "warning", "error"]
    pd.testing.assert_frame_equal(scored[source.columns], source)  # every input column, unchanged
    for i, row in scored.iterrows():
        if i == BAD_ROW:
            assert source.loc[i, "CDR3_beta"] == "CASSX1F"
            assert row["error"].startswith("CDR3_beta: ")
            assert "X" in row["error"]
            assert row["score"] == ""
            assert row["prediction"] == ""
        else:
            assert row["error"] == ""
            assert 0.0 <= float(row["score"]) <= 1.0
            assert row["prediction"] == str(int(float(row["score"]) >= 0.5))
    result = pipeline.results["predict"]
    assert f"scored {len(source) - 1} of {len(source)} rows" in result.stdout
    assert "1 invalid row(s)" in result.stderr
    assert sorted(p.name for p in pipeline.directory.iterdir()) == [
        "input.csv",
        "metrics.json",
        "model",
        "prepared",
        "scores.csv",
    ]


def test_predicted_scores_come_from_the_saved_model(pipeline: PipelineRun) -> None:
    scored = pd.read_csv(pipeline.path("scores.csv"), dtype=str, keep_default_na=False)
    rows = pd.read_csv(pipeline.path("input.csv"), dtype=str, keep_default_na=False)
    again = predict_frame(load_bundle(pipeline.path("model")), rows)
    assert again["score"].tolist() == scored["score"].tolist()


def test_paper_model_reports_a_non_amino_acid_cdr3(cli_pipelines: dict[str, PipelineRun]) -> None:
    run = cli_pipelines["paper"]
    rows = pd.read_csv(run.path("input.csv"), dtype=str, keep_default_na=False).head(2)
    rows.loc[1, "CDR3_beta"] = "CASS1F"
    result = predict_frame(load_bundle(run.path("model")), rows)
    assert result.loc[0, "error"] == ""
    assert result.loc[1, "error"].startswith("CDR3_beta")
