"""Real Prefect flows on a real Dask LocalCluster: search, promotion, kill and resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from flow_fixtures import run_search_process

from tcr_pipeline.store import Store, TrialRecord

pytestmark = pytest.mark.slow


def _finished(store: Store, run_id: str) -> list:
    return [t for t in store.list_trials(run_id) if t.done]


def test_search_flow_runs_trials_on_dask_workers_and_promotes(prefect_api: str, workdir: Path) -> None:
    from flows.search import search_flow

    store = Store(workdir / "store-a")
    outcome = search_flow(
        run_id="run-a",
        store=str(store.root),
        prepared_dir=str(workdir / "prepared"),
        params_file=str(workdir / "params.yaml"),
    )
    trials = store.list_trials("run-a")
    assert [t.trial_id for t in trials] == [0, 1, 2, 3]
    assert all(t.status == "ok" for t in trials)
    # trials ran in Dask worker processes, not in this one
    assert {t.hardware.pid for t in trials}.isdisjoint({os.getpid()})
    assert all(len(t.history) == t.params["epochs"] for t in trials)
    assert all(store.model_dir(t).joinpath("weights.pt").exists() for t in trials)
    manifest = store.load_manifest("run-a")
    assert manifest is not None
    assert manifest.status == "completed"
    assert manifest.data_sha256 == hashlib.sha256((workdir / "small.csv").read_bytes()).hexdigest()
    registry = store.load_registry()
    assert len(registry.models) == 3
    best = max(trials, key=lambda t: t.objective or -1e9)
    assert registry.current == f"run-a/{best.trial_id:04d}"
    assert outcome["current"] == registry.current
    assert len(registry.history) == 1
    assert registry.history[0].replaced is None


def test_search_with_a_failing_trial_records_it_and_goes_on(prefect_api: str, workdir: Path) -> None:
    """A learning rate that diverges is a failed trial with its error; the search completes."""
    from flows.search import search_flow

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["search"]["space"]["lr"] = {"choice": [1e30]}
    params["search"]["max_evals"] = 2
    (workdir / "params-nan.yaml").write_text(yaml.safe_dump(params))
    store = Store(workdir / "store-nan")
    search_flow(
        run_id="run-nan",
        store=str(store.root),
        prepared_dir=str(workdir / "prepared"),
        params_file=str(workdir / "params-nan.yaml"),
    )
    trials = store.list_trials("run-nan")
    assert len(trials) == 2
    assert all(t.status == "failed" for t in trials)
    assert all(t.error and "TrainingError" in t.error for t in trials)
    assert store.load_manifest("run-nan").status == "completed"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigkill_mid_search_then_resume(prefect_api: str, workdir: Path) -> None:
    """Kill the flow process mid-run; resuming the run id finishes it with exactly max_evals trials."""
    store = Store(workdir / "store-kill")
    max_evals = 6
    command = [
        sys.executable, "-m", "tcr_cli", "search",
        "--run-id", "run-kill", "--store", str(store.root), "--max-evals", str(max_evals),
        "--parallelism", "2", "--prepared", str(workdir / "prepared"),
        "--params", str(workdir / "params.yaml"),
    ]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    process = subprocess.Popen(
        command, cwd=workdir, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len(_finished(store, "run-kill")) < 2:
        assert process.poll() is None, "the search ended before it could be killed"
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the flow process and its Dask workers
    process.wait()
    before = {t.trial_id: t for t in _finished(store, "run-kill")}
    assert 2 <= len(before) < max_evals
    files_before = {
        tid: (_digest(store.attempt_dir("run-kill", tid, t.attempt) / "trial.json"),
              _digest(store.model_dir(t) / "weights.pt"))
        for tid, t in before.items()
    }  # fmt: skip
    assert store.load_manifest("run-kill").status == "running"  # killed: never marked finished

    resumed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    trials = store.list_trials("run-kill")
    finished = [t for t in trials if t.done]
    assert sorted(t.trial_id for t in finished) == list(range(max_evals))  # none lost, none duplicated
    assert len(finished) == max_evals
    for tid, (trial_digest, weights_digest) in files_before.items():
        record = store.list_trials("run-kill")[tid]
        assert record.attempt == before[tid].attempt  # the same attempt still counts
        assert _digest(store.attempt_dir("run-kill", tid, record.attempt) / "trial.json") == trial_digest
        assert _digest(store.model_dir(record) / "weights.pt") == weights_digest
    assert store.load_manifest("run-kill").status == "completed"


def test_promotion_keeps_a_better_current_model(prefect_api: str, workdir: Path) -> None:
    """A second run whose trials are all worse does not replace the current model (unless forced)."""
    from flows.search import search_flow

    store = Store(workdir / "store-promo")
    common = {"store": str(store.root), "prepared_dir": str(workdir / "prepared")}
    search_flow(run_id="good", params_file=str(workdir / "params.yaml"), **common)
    first = store.load_registry().current
    assert first is not None
    assert first.startswith("good/")

    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["search"]["space"]["lr"] = {"choice": [1e-9]}  # learns nothing
    params["search"]["space"]["epochs"] = {"choice": [1]}
    params["search"]["max_evals"] = 2
    (workdir / "params-bad.yaml").write_text(yaml.safe_dump(params))
    outcome = search_flow(run_id="bad", params_file=str(workdir / "params-bad.yaml"), **common)
    registry = store.load_registry()
    assert outcome["promoted"] is None  # an untrained model never wins beyond the noise
    assert registry.current == first
    assert len(registry.history) == 1
    refused = registry.comparisons[-1]
    assert refused.current == first
    assert refused.candidate.startswith("bad/")
    assert not refused.promoted
    assert refused.interval["low"] <= 0  # the interval does not exclude "no better"
    forced = search_flow(run_id="bad", params_file=str(workdir / "params-bad.yaml"), force=True, **common)
    assert forced["promoted"] is not None
    registry = store.load_registry()
    assert registry.current.startswith("bad/")
    assert registry.history[-1].replaced == first
    assert registry.history[-1].reason.startswith("forced: ")


def test_workers_that_cannot_reach_the_api_stop_the_search_non_zero(prefect_api: str, workdir: Path) -> None:
    """Workers whose PREFECT_API_URL points nowhere: no trial counts as finished, and the search
    stops with the reason and a non-zero exit, not `completed` with best -inf and exit 0."""
    profile = workdir / "unreachable-api.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "kind": "local",
                "description": "local workers told to report to a Prefect API that is not there",
                "cluster_kwargs": {
                    "threads_per_worker": 1,
                    "processes": True,
                    "memory_limit": "2GiB",
                    # the Nanny sets these in each worker process: its HTTP requests (the Prefect
                    # API's URL comes with each task, from the flow) go to a proxy that is not there
                    "env": {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"},
                },
            }
        )
    )
    store = Store(workdir / "store-unreachable")
    done, seconds = run_search_process(
        workdir, workdir, prefect_api,
        "--run-id", "run-unreachable", "--store", store.root, "--max-evals", 4,
        "--parallelism", 2, "--cluster", profile, timeout=400,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: search stopped: "), done.stderr[-3000:]
    assert "infrastructure failure(s) in a row" in last
    manifest = store.load_manifest("run-unreachable")
    assert manifest is not None
    assert manifest.status == "failed"
    assert manifest.error is not None
    assert manifest.error.startswith("InfrastructureError: search stopped")
    assert not [t for t in store.list_trials("run-unreachable") if t.done]  # nothing counted
    print(f"unreachable API: stopped after {seconds:.1f} s: {last}")


def test_new_runs_draw_new_seeds_and_a_repeated_run_is_registered_once(
    prefect_api: str, workdir: Path
) -> None:
    """No seed: each new run draws one (in its manifest). The same seed repeats the run's trials,
    and the registry does not list the repeated models twice."""
    from flows.search import search_flow

    store = Store(workdir / "store-seeds")
    common = {"store": str(store.root), "prepared_dir": str(workdir / "prepared"), "max_evals": 2}
    params_file = str(workdir / "params.yaml")
    search_flow(run_id="drawn-1", params_file=params_file, promote=False, baseline=False, **common)
    search_flow(run_id="drawn-2", params_file=params_file, promote=False, baseline=False, **common)
    seeds = [store.load_manifest(r).seed for r in ("drawn-1", "drawn-2")]  # type: ignore[union-attr]
    assert seeds[0] != seeds[1]

    first = search_flow(run_id="seeded-1", params_file=params_file, seed=7, baseline=False, **common)
    second = search_flow(run_id="seeded-2", params_file=params_file, seed=7, baseline=False, **common)
    assert store.load_manifest("seeded-2").seed == 7  # type: ignore[union-attr]
    trials = [{t.trial_id: t.params for t in store.list_trials(r)} for r in ("seeded-1", "seeded-2")]
    assert trials[0] == trials[1]  # the same seed: the same trials
    registry = store.load_registry()
    fingerprints = [m.fingerprint for m in registry.models]
    assert len(fingerprints) == len(set(fingerprints))  # never the same model twice
    assert not any(m.run_id == "seeded-2" for m in registry.models)
    assert second["registered"] == first["registered"]
    assert second["promoted"] is None

    resumed = search_flow(run_id="seeded-1", params_file=params_file, seed=99, baseline=False, **common)
    assert resumed["finished"] == 2
    assert store.load_manifest("seeded-1").seed == 7  # type: ignore[union-attr]  # a resume keeps its seed


def test_batches_of_suggestions_run_in_one_task_each_and_resume(prefect_api: str, workdir: Path) -> None:
    """batch_size 2, parallelism 2: trials 0–1 in one task, 2 in another; a resumed run re-runs an
    interrupted trial and suggests the rest, each record naming its batch and device."""
    from flows.search import search_flow

    store = Store(workdir / "store-batch")
    common = {
        "run_id": "run-batch", "store": str(store.root), "prepared_dir": str(workdir / "prepared"),
        "params_file": str(workdir / "params.yaml"), "batch_size": 2, "parallelism": 2,
        "promote": False, "baseline": False,
    }  # fmt: skip
    outcome = search_flow(max_evals=3, **common)
    assert outcome["finished"] == 3
    trials = store.list_trials("run-batch")
    assert [(t.trial_id, t.status, t.device) for t in trials] == [(i, "ok", "cpu") for i in range(3)]
    assert trials[0].batch == trials[1].batch != trials[2].batch
    assert trials[0].batch is not None
    assert trials[0].batch.startswith("b0000-")
    assert trials[2].batch is not None
    assert trials[2].batch.startswith("b0002-")

    # trial 3 was in flight when its process died: a running record, no result
    dead = TrialRecord(
        run_id="run-batch", trial_id=3, attempt="dead", params=trials[2].params,
        hyperopt_vals=trials[2].hyperopt_vals,
    )  # fmt: skip
    store.write_trial(dead)
    outcome = search_flow(max_evals=5, **common)
    assert outcome["finished"] == 5
    trials = store.list_trials("run-batch")
    assert [(t.trial_id, t.status) for t in trials] == [(i, "ok") for i in range(5)]
    assert trials[3].attempt != "dead"
    assert trials[3].params == trials[2].params  # re-run as it was suggested
    # the interrupted trial is a batch of its own, then one slot is left for one suggestion
    assert len({t.batch for t in trials}) == 4
    assert store.load_manifest("run-batch").status == "completed"  # type: ignore[union-attr]
