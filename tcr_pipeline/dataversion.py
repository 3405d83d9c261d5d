"""Data versions: a labelled data file, the md5 DVC records for it, and the models trained on it.

The search records ``dvc_md5`` from ``dvc.lock`` only; a version added with ``dvc add`` is in
``<file>.dvc``. :func:`data_version` reads both, :func:`stamp_data_version` records a verified
version on a run and its registered models (the retrain flow), and :func:`data_versions` lists
every registered model with the data it was trained on. ``docs/monitoring.md`` describes the
DVC set-up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from tcr_pipeline.errors import InputError
from tcr_pipeline.files import sha256_file
from tcr_pipeline.provenance import dvc_md5
from tcr_pipeline.store import Store


class DataVersion(BaseModel):
    """A labelled data file and the version DVC records for it."""

    model_config = ConfigDict(extra="allow")

    path: str
    sha256: str
    md5: str  # of the file's bytes, what DVC 3 records
    dvc_md5: str | None = None  # from <path>.dvc (dvc add), else dvc.lock (a stage dependency)
    dvc_file: str | None = None

    @property
    def tracked(self) -> bool:
        return self.dvc_md5 is not None

    @property
    def current(self) -> bool:
        """Whether DVC's record matches the file (False: changed since the last dvc add / repro)."""
        return self.dvc_md5 == self.md5


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def dvc_file_md5(path: Path | str) -> str | None:
    """The md5 that ``<path>.dvc`` (written by ``dvc add``) records for ``path``, if any."""
    dvc_file = Path(f"{path}.dvc")
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
    except (OSError, yaml.YAMLError):
        return None
    for out in outs:
        if Path(str(out.get("path", ""))).name == Path(path).name:
            return out.get("md5")
    return None


def data_version(path: Path | str, lock: Path | str = "dvc.lock") -> DataVersion:
    """The sha256, md5 and DVC-recorded md5 of a data file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file (dvc pull / dvc checkout it first)")
    recorded = dvc_file_md5(path)
    dvc_file = f"{path}.dvc" if recorded else None
    if recorded is None:
        recorded = dvc_md5(path, lock)
        dvc_file = str(lock) if recorded else None
    return DataVersion(
        path=str(path), sha256=sha256_file(path), md5=_md5(path), dvc_md5=recorded, dvc_file=dvc_file
    )


def stamp_data_version(store: Store, run_id: str, version: DataVersion) -> int:
    """Record a verified data version on a run's manifest and its registered models.

    Returns how many registry entries changed.
    """
    if not version.current:
        raise InputError(f"{version.path}: DVC records md5 {version.dvc_md5}, the file has {version.md5}")
    manifest = store.load_manifest(run_id)
    if manifest is not None and manifest.data_sha256 not in ("", version.sha256):
        raise InputError(f"run {run_id} was trained on data {manifest.data_sha256[:12]}, not {version.path}")
    if manifest is not None:
        store.write_manifest(manifest.model_copy(update={"dvc_md5": version.dvc_md5}))
    changed = 0
    with store.registry_lock():
        registry = store.load_registry()
        for i, entry in enumerate(registry.models):
            if (
                entry.run_id == run_id
                and entry.data_sha256 == version.sha256
                and entry.dvc_md5 != version.dvc_md5
            ):
                registry.models[i] = entry.model_copy(update={"dvc_md5": version.dvc_md5})
                changed += 1
        if changed:
            store.save_registry(registry)
    return changed


__all__ = ["DataVersion", "data_version", "dvc_file_md5", "stamp_data_version"]
