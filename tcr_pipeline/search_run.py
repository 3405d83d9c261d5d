"""A search run's manifest: opened (new or resumed) before its trials, closed with its outcome.

The flows only wire these: everything a run records about itself (seed, settings, code, data,
packages, hardware, status) is decided here.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcr_pipeline.config import Params
from tcr_pipeline.errors import InputError
from tcr_pipeline.prepare import Prepared
from tcr_pipeline.provenance import dvc_md5, git_state, gpu_name, package_versions
from tcr_pipeline.store import RunManifest, RunStatus, Store, check_resume_budget, new_run_id, now


@dataclass
class RunStart:
    """A run opened by :func:`open_run`: its manifest (written), its settings and what to log."""

    manifest: RunManifest
    params: Params
    resumed: bool
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def open_run(
    store: Store, run_id: str | None, params: Params, prepared: Prepared, prepared_dir: Path | str
) -> RunStart:
    """Create run ``run_id`` (a new id when None) or resume it, and write its manifest as running.

    A new run draws its seed unless ``params.search.seed`` gives one; a resumed run keeps the
    seed it started with and must be on the same data, with ``max_evals`` not below its finished
    trials, and with the search space and training settings it started with (a resume that
    changed them would mix two searches in one run): :class:`InputError` otherwise. The
    returned params carry the run's seed.
    """
    run_id = run_id or new_run_id()
    manifest = store.load_manifest(run_id)
    warnings: list[str] = []
    seed = manifest.seed if manifest is not None else params.search.seed
    if seed is None:
        seed = secrets.randbelow(2**31)
    if manifest is not None and params.search.seed not in (None, seed):
        warnings.append(f"run {run_id} keeps its seed {seed} (asked for {params.search.seed})")
    params = params.model_copy(update={"search": params.search.model_copy(update={"seed": seed})})
    if manifest is None:
        commit, dirty = git_state()
        manifest = RunManifest(
            run_id=run_id,
            max_evals=params.search.max_evals,
            parallelism=params.search.parallelism,
            cluster=params.search.cluster,
            objective=params.evaluate.objective,
            seed=seed,
            params=params.model_dump(mode="json"),
            search_space={k: v.model_dump(exclude_none=True) for k, v in params.search.space.items()},
            git_commit=commit,
            git_dirty=dirty,
            data_path=str(prepared.meta.get("raw", "")),
            data_sha256=prepared.data_sha256,
            dvc_md5=dvc_md5(prepared.meta.get("raw", params.data.raw)),
            packages=package_versions(),
            gpu=gpu_name(),
            prepared_dir=str(prepared_dir),
        )
        note = f"new run {run_id} in {store.root}"
    else:
        if manifest.data_sha256 != prepared.data_sha256:
            raise InputError(
                f"run {run_id} was started on data {manifest.data_sha256[:12]}, "
                f"but {prepared_dir} holds {prepared.data_sha256[:12]}"
            )
        check_resume_budget(store, run_id, params.search.max_evals)
        _check_same_search(manifest, params)
        manifest = manifest.model_copy(
            update={
                "status": "running",
                "finished": None,
                "error": None,
                "max_evals": params.search.max_evals,
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        )
        note = f"resuming run {run_id}"
    store.write_manifest(manifest)
    return RunStart(manifest, params, resumed=note.startswith("resuming"), notes=[note], warnings=warnings)


def close_run(
    store: Store, manifest: RunManifest, status: RunStatus, error: BaseException | None = None
) -> None:
    """Record how a run ended: ``completed``, ``failed`` or ``interrupted`` (resumable)."""
    update: dict[str, Any] = {"status": status, "finished": now()}
    if error is not None:
        update["error"] = f"{type(error).__name__}: {error}"
    store.write_manifest(manifest.model_copy(update=update))


__all__ = ["RunStart", "close_run", "open_run"]


def _check_same_search(manifest: RunManifest, params: Params) -> None:
    """Refuse to resume ``manifest``'s run with another search space or other training settings
    (the device aside: a run may resume on other hardware)."""
    space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in params.search.space.items()}
    started = manifest.params.get("train")
    train = params.train.model_dump(mode="json")
    changed = []
    if manifest.search_space and manifest.search_space != space:
        changed.append("search.space")
    if isinstance(started, dict) and {**started, "device": None} != {**train, "device": None}:
        changed.append("train")
    if changed:
        raise InputError(
            f"run {manifest.run_id} was started with other {' and '.join(changed)} settings: resume it "
            "with the params it started with (its manifest.json), or start a new run"
        )
