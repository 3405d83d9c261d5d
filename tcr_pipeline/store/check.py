"""Damage in a store (records that cannot be read, runs whose process died), and its repair."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from tcr_pipeline.errors import InputError
from tcr_pipeline.store.file_store import Store
from tcr_pipeline.store.layout import (
    MANIFEST_FILE,
    REGISTRY_FILE,
    RUN_ID_PATTERN,
    TRIAL_FILE,
    TRIALS_DIR,
    now,
    run_of,
    runs_dir,
)
from tcr_pipeline.store.records import Record, Registry, RunManifest, TrialRecord, read_or_skip, read_record


@dataclass(frozen=True)
class Damage:
    """A record that cannot be read, or a run whose owner died while it was ``running``."""

    path: Path
    problem: str
    run_id: str | None = None
    stale: bool = False  # a run left `running` by a dead process (``mark_stale`` can fix it)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_store(store: Store) -> list[Damage]:
    """Every damaged record and every stale ``running`` run of a store (read-only).

    A run is stale when its manifest says ``running`` and names this host and a process id that
    no longer exists here. Runs owned by another host are not judged (their process cannot be
    seen from here).
    """
    found: list[Damage] = []
    registry = store.root / REGISTRY_FILE
    if registry.exists():
        found.extend(_damage(registry, Registry))
    folder = runs_dir(store.root)
    if not folder.is_dir():
        return found
    for run_dir in sorted(folder.iterdir()):
        if not run_dir.is_dir():
            continue
        if not RUN_ID_PATTERN.fullmatch(run_dir.name):
            found.append(Damage(run_dir, "not a valid run id; ignored by every reader"))
            continue
        damage = _damage(run_dir / MANIFEST_FILE, RunManifest)
        found.extend(damage)
        manifest = None if damage else read_or_skip(run_dir / MANIFEST_FILE, RunManifest)
        if manifest is None and not damage:
            found.append(Damage(run_dir / MANIFEST_FILE, "missing: the run is not listed", run_dir.name))
        trials_dir = run_dir / TRIALS_DIR
        if trials_dir.is_dir():
            for trial_file in sorted(trials_dir.glob(f"*/*/{TRIAL_FILE}")):
                found.extend(_damage(trial_file, TrialRecord))
        if manifest is not None and manifest.status == "running" and _owner_gone(manifest):
            found.append(
                Damage(
                    run_dir / MANIFEST_FILE,
                    f"stale: `running`, but its process {manifest.pid} on {manifest.host} is gone",
                    manifest.run_id,
                    stale=True,
                )
            )
    return found


def check_resume_budget(store: Store, run_id: str, max_evals: int) -> int:
    """The number of finished trials of a run; InputError when ``max_evals`` is below it."""
    finished = sum(t.done for t in store.list_trials(run_id))
    if max_evals < finished:
        raise InputError(
            f"run {run_id}: already has {finished} finished trials, --max-evals {max_evals} is below that "
            "(max_evals counts every trial of the run)"
        )
    return finished


def mark_stale(store: Store, run_id: str) -> RunManifest:
    """Record a stale run as ``interrupted`` (resumable with its run id)."""
    manifest = store.load_manifest(run_id)
    if manifest is None:
        raise InputError(f"run {run_id}: no manifest")
    marked = manifest.model_copy(
        update={
            "status": "interrupted",
            "finished": now(),
            "error": f"its process {manifest.pid} on {manifest.host} died while the run was running",
        }
    )
    store.write_manifest(marked)
    return marked


def _owner_gone(manifest: RunManifest) -> bool:
    if manifest.pid is None or manifest.host != socket.gethostname():
        return False
    try:
        os.kill(manifest.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _damage(path: Path, kind: type[Record]) -> list[Damage]:
    try:
        read_record(path, kind)
    except InputError as exc:
        return [Damage(path, str(exc).removeprefix(f"{path}: "), run_of(path))]
    return []
