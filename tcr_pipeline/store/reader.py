"""Cached, incremental reading of a store: what a long-lived reader (the dashboard) polls.

The cache belongs to the store, not to its user: :class:`StoreReader` knows the store's
guarantees and relies on them. Files are replaced atomically (a new inode per write), so a file
whose ``(inode, mtime, size)`` is unchanged holds the same record. A trial whose counted attempt
has finished is final (the first finished attempt counts, and a finished record is never
rewritten), so a refresh looks only at trials still running, at new trial folders, at manifests
and at the registry. A run that is not ``running`` is rescanned only when its manifest changes
(a resume rewrites it first).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field

from tcr_pipeline.errors import InputError
from tcr_pipeline.store.file_store import Store
from tcr_pipeline.store.layout import MANIFEST_FILE, REGISTRY_FILE, TRIAL_FILE, StatKey, stat_key, trials_dir
from tcr_pipeline.store.records import Registry, RunManifest, TrialRecord, parse_record
from tcr_pipeline.store.summary import counted_attempt


@dataclass
class _RunState:
    manifest_key: StatKey | None = None
    manifest: RunManifest | None = None
    scanned_manifest_key: StatKey | None = None  # the manifest version the trials were last scanned at
    final: dict[int, TrialRecord] = field(default_factory=dict)  # trials whose counted attempt finished
    # trials still unfinished: trial id -> attempt name -> (file key, record)
    attempts: dict[int, dict[str, tuple[StatKey, TrialRecord]]] = field(default_factory=dict)
    trials: list[TrialRecord] = field(default_factory=list)


@dataclass
class ReadStats:
    """How much a reader has read (the tests and the benchmark check refreshes stay small)."""

    records_read: int = 0
    unreadable: int = 0
    refreshes: int = 0


class StoreReader:
    """Cached, incremental, thread-safe reads of one store: the same answers as :class:`Store`.

    ``refresh()`` brings the cache up to date and returns a version number that grows whenever
    anything a reader shows changed; calls closer together than ``min_interval`` seconds return
    at once. What it may see while processes write: each record old or new (never partial); a
    run's trials as of the moment each trial folder was listed. An unreadable file is recorded in
    ``problems`` and not read again until it changes.
    """

    def __init__(self, store: Store, min_interval: float = 0.5) -> None:
        self.store = store
        self.min_interval = min_interval
        self.version = 0
        self.stats = ReadStats()
        self.problems: dict[str, str] = {}  # file -> why it could not be read
        self._unreadable: dict[str, StatKey] = {}  # not read again until the file changes
        self._runs: dict[str, _RunState] = {}
        self._registry_key: StatKey | None = None
        self._registry = Registry()
        self._lock = threading.Lock()
        self._last_refresh = -math.inf

    # public reads (each refreshes first, at most every min_interval) ---------------------------
    def runs(self) -> list[RunManifest]:
        """Every run with a readable manifest, oldest first."""
        self.refresh()
        with self._lock:
            manifests = [s.manifest for s in self._runs.values() if s.manifest is not None]
        return sorted(manifests, key=lambda m: m.started)

    def manifest(self, run_id: str) -> RunManifest | None:
        self.refresh()
        with self._lock:
            state = self._runs.get(run_id)
            return state.manifest if state else None

    def trials(self, run_id: str) -> list[TrialRecord]:
        """One record per trial (the counted attempt), by trial id."""
        self.refresh()
        with self._lock:
            state = self._runs.get(run_id)
            return list(state.trials) if state else []

    def registry(self) -> Registry:
        self.refresh()
        with self._lock:
            return self._registry

    # refreshing ------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> int:
        """Re-read what changed; returns the version (unchanged when nothing changed)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.min_interval:
                return self.version
            self._last_refresh = now
            self.stats.refreshes += 1
            changed = self._refresh_registry()
            changed = self._refresh_runs() or changed
            if changed:
                self.version += 1
            return self.version

    def _refresh_registry(self) -> bool:
        key = stat_key(self.store.root / REGISTRY_FILE)
        if key == self._registry_key:
            return False
        try:
            registry = self.store.load_registry()
        except InputError as exc:
            self.problems[REGISTRY_FILE] = str(exc)
            return False
        self._registry_key, self._registry = key, registry
        self.stats.records_read += 1
        return True

    def _refresh_runs(self) -> bool:
        names = self.store.run_ids()
        changed = False
        for gone in set(self._runs) - set(names):
            del self._runs[gone]
            changed = True
        for run_id in names:
            state = self._runs.setdefault(run_id, _RunState())
            changed = self._refresh_manifest(run_id, state) or changed
            if state.manifest is None:
                continue
            if state.manifest.status != "running" and state.scanned_manifest_key == state.manifest_key:
                continue  # a finished run changes only through its manifest (resume)
            changed = self._refresh_trials(run_id, state) or changed
            state.scanned_manifest_key = state.manifest_key
        return changed

    def _refresh_manifest(self, run_id: str, state: _RunState) -> bool:
        key = stat_key(self.store.run_dir(run_id) / MANIFEST_FILE)
        if key == state.manifest_key:
            return False
        try:
            manifest = self.store.load_manifest(run_id)
        except InputError as exc:
            self.problems[f"{run_id}/{MANIFEST_FILE}"] = str(exc)
            return False
        state.manifest_key, state.manifest = key, manifest
        self.stats.records_read += 1
        return True

    def _refresh_trials(self, run_id: str, state: _RunState) -> bool:
        # Plain strings and os.scandir: with a thousand trials, pathlib's overhead would dominate.
        folder = str(trials_dir(self.store.root, run_id))
        try:
            trial_dirs = [(e.name, e.path) for e in os.scandir(folder) if e.is_dir()]
        except FileNotFoundError:
            return False
        changed = False
        for name, trial_path in trial_dirs:
            try:
                trial_id = int(name)
            except ValueError:
                continue
            if trial_id in state.final:
                continue
            cached = state.attempts.setdefault(trial_id, {})
            records: list[TrialRecord] = []
            for attempt in os.scandir(trial_path):
                if not attempt.is_dir():
                    continue
                path = os.path.join(attempt.path, TRIAL_FILE)
                key = stat_key(path)
                if key is None:
                    continue
                hit = cached.get(attempt.name)
                if hit is None or hit[0] != key:
                    if self._unreadable.get(path) == key:
                        continue
                    record = self._read_trial(path)
                    if record is None:
                        self._unreadable[path] = key
                        continue
                    hit = cached[attempt.name] = (key, record)
                    changed = True
                records.append(hit[1])
            counted = counted_attempt(records)
            if counted is not None and counted.done:
                state.final[trial_id] = counted
                del state.attempts[trial_id]
            elif not cached:
                del state.attempts[trial_id]
        if changed or len(state.trials) != len(state.final) + len(state.attempts):
            state.trials = self._counted_trials(state)
        return changed

    def _read_trial(self, path: str) -> TrialRecord | None:
        try:
            with open(path, "rb") as handle:
                record = parse_record(handle.read(), TrialRecord, path)
        except FileNotFoundError:
            return None
        except InputError as exc:
            self.problems[os.path.relpath(path, self.store.root)] = str(exc).removeprefix(f"{path}: ")
            self.stats.unreadable += 1
            return None
        self.stats.records_read += 1
        return record

    @staticmethod
    def _counted_trials(state: _RunState) -> list[TrialRecord]:
        chosen = dict(state.final)
        for trial_id, attempts in state.attempts.items():
            counted = counted_attempt(record for _, record in attempts.values())
            if counted is not None:
                chosen[trial_id] = counted
        return [chosen[t] for t in sorted(chosen)]
