"""The store as typed records on disk: :class:`Store`, the only code that writes it."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import make_dirs, share_with_group, write_text_atomic
from tcr_pipeline.store import layout
from tcr_pipeline.store.layout import MANIFEST_FILE, REGISTRY_FILE, TRIAL_FILE
from tcr_pipeline.store.records import (
    Registry,
    RunManifest,
    TrialRecord,
    read_or_skip,
    read_record,
    write_record,
)
from tcr_pipeline.store.summary import counted_attempt


class Store:
    """Typed access to a result store directory; the only code that writes it.

    Guarantees (docs/store.md, "Guarantees"):

    - **Atomic records.** Every record file is replaced whole (a temporary file in the same
      folder, then ``rename(2)``): a concurrent reader, on this host or another, sees the old
      record or the new one, never a partial one.
    - **One writer per file.** A run's ``manifest.json`` and ``baseline.json`` are written by the
      process running its search; an attempt's ``trial.json`` and ``model/`` only by the process
      running that attempt, in a folder named after its host, process and a random suffix, so no
      two processes ever write the same trial file. ``registry.json`` is the one shared file: it
      is changed only as a read-modify-write under :meth:`registry_lock`.
    - **Counted once.** A trial is its counted attempt (:func:`~tcr_pipeline.store.summary.counted_attempt`):
      the first to finish; an attempt that finishes later is ignored.
    - **Damage stays local.** A record that cannot be read is skipped by every list (``check_store``
      names it); ``load_*`` of one damaged file is an :class:`InputError`.
    - **Shared filesystems.** Atomic rename and close-to-open consistency (NFS without ``nocto``)
      are all the records need; the registry lock needs ``flock`` coherent across hosts (NFSv4,
      NFSv3 with lockd, Lustre ``-o flock``), see docs/store.md.
    """

    def __init__(self, root: Path | str, group: str | None = None) -> None:
        self.root = Path(root)
        self.group = group or os.environ.get(layout.STORE_GROUP_ENV) or None
        self._prepared = False

    def _prepare(self) -> None:
        """Before the first write: create the store, shared with ``group`` when one is set."""
        if not self._prepared:
            if self.group:
                share_with_group(self.root, self.group)
            else:
                make_dirs(self.root)
            self._prepared = True

    @classmethod
    def from_env(cls, root: Path | str | None = None) -> Store:
        """``root`` if given, else ``$TCR_STORE``, else ``./store``."""
        return cls(root or os.environ.get(layout.STORE_ENV) or "store")

    # runs ---------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return layout.run_dir(self.root, run_id)

    def run_ids(self) -> list[str]:
        """The names under ``runs/`` that are valid run ids, sorted (manifests not read)."""
        try:
            entries = os.scandir(layout.runs_dir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        with entries:
            return sorted(e.name for e in entries if e.is_dir() and layout.RUN_ID_PATTERN.fullmatch(e.name))

    def write_manifest(self, manifest: RunManifest) -> None:
        self._prepare()
        write_record(self.run_dir(manifest.run_id) / MANIFEST_FILE, manifest)

    def load_manifest(self, run_id: str) -> RunManifest | None:
        return read_record(self.run_dir(run_id) / MANIFEST_FILE, RunManifest)

    def list_runs(self) -> list[RunManifest]:
        """Every run with a readable manifest, oldest first."""
        manifests = [read_or_skip(self.run_dir(r) / MANIFEST_FILE, RunManifest) for r in self.run_ids()]
        return sorted((m for m in manifests if m is not None), key=lambda m: m.started)

    def write_baseline(self, run_id: str, metrics: dict[str, dict[str, float]]) -> None:
        """Metrics of the k-mer baseline computed on the run's split (``baseline.json``)."""
        self._prepare()
        write_text_atomic(self.run_dir(run_id) / layout.BASELINE_FILE, json.dumps(metrics, indent=2) + "\n")

    def load_baseline(self, run_id: str) -> dict[str, dict[str, float]] | None:
        try:
            return json.loads((self.run_dir(run_id) / layout.BASELINE_FILE).read_text())
        except FileNotFoundError:
            return None

    # trials -------------------------------------------------------------------------------
    def attempt_dir(self, run_id: str, trial_id: int, attempt: str) -> Path:
        return layout.attempt_dir(self.root, run_id, trial_id, attempt)

    def model_dir(self, record: TrialRecord) -> Path:
        return self.attempt_dir(record.run_id, record.trial_id, record.attempt) / layout.MODEL_DIR

    def write_trial(self, record: TrialRecord) -> None:
        self._prepare()
        write_record(self.attempt_dir(record.run_id, record.trial_id, record.attempt) / TRIAL_FILE, record)

    def trial_attempts(self, run_id: str) -> Iterator[TrialRecord]:
        """Every readable attempt record of a run (a damaged one is skipped: see ``check_store``)."""
        trials_dir = layout.trials_dir(self.root, run_id)
        if not trials_dir.is_dir():
            return
        for trial_dir in sorted(trials_dir.iterdir()):
            if trial_dir.is_dir():
                yield from self._attempts_in(trial_dir)

    @staticmethod
    def _attempts_in(trial_dir: Path) -> Iterator[TrialRecord]:
        for attempt_dir in sorted(trial_dir.iterdir()):
            record = read_or_skip(attempt_dir / TRIAL_FILE, TrialRecord)
            if record is not None:
                yield record

    def list_trials(self, run_id: str) -> list[TrialRecord]:
        """One record per trial id, its counted attempt (:func:`counted_attempt`), by trial id."""
        attempts: defaultdict[int, list[TrialRecord]] = defaultdict(list)
        for record in self.trial_attempts(run_id):
            attempts[record.trial_id].append(record)
        chosen = {t: counted_attempt(a) for t, a in attempts.items()}
        return [r for t in sorted(chosen) if (r := chosen[t]) is not None]

    def finished_trial(self, run_id: str, trial_id: int) -> TrialRecord | None:
        """The counted attempt of a trial, if one has finished."""
        trial_dir = layout.trials_dir(self.root, run_id) / layout.trial_dir_name(trial_id)
        if not trial_dir.is_dir():
            return None
        return counted_attempt(r for r in self._attempts_in(trial_dir) if r.done)

    # registry -----------------------------------------------------------------------------
    @contextmanager
    def registry_lock(self) -> Iterator[None]:
        """An exclusive lock for read-modify-write of the registry: ``flock(2)`` on ``.registry.lock``.

        Hold it from :meth:`load_registry` to :meth:`save_registry`; readers that only read need
        no lock (the file is replaced atomically). Across hosts only where the filesystem makes
        flock coherent between clients (docs/store.md, "Locking on shared filesystems").
        """
        self._prepare()
        with layout.exclusive_lock(self.root / layout.LOCK_FILE):
            yield

    def load_registry(self) -> Registry:
        return read_record(self.root / REGISTRY_FILE, Registry) or Registry()

    def save_registry(self, registry: Registry) -> None:
        """Replace the registry (call it under :meth:`registry_lock`, after loading it there)."""
        self._prepare()
        write_record(self.root / REGISTRY_FILE, registry)

    def resolve_model(self, name: str) -> Path:
        """A model directory from ``best``, a registry id (``RUN/TID``) or a path.

        A path to a bundle directory is used as it is: the registry is not read, so a damaged
        registry does not stop ``predict --model /path/to/bundle``.
        """
        if name != "best" and (Path(name) / "card.json").is_file():
            return Path(name)
        if name == "best":
            entry = self.load_registry().current_entry
            if entry is None:
                raise InputError(f"{self.root}: no promoted model yet (run a search first)")
            return self.root / entry.path
        entry = self.load_registry().get(name)
        if entry is not None:
            return self.root / entry.path
        return Path(name)
