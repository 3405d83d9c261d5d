"""Small file helpers: atomic writes, content hashes, and checks of output paths."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcr_pipeline.errors import InputError


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Readers never see a partial file: the rename is atomic on POSIX filesystems (NFS and
    Lustre included, within one directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write text atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return write_atomic(path, write)


def write_json_atomic(path: Path | str, payload: Any) -> Path:
    """Write JSON (indented, sorted keys) atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def check_output_target(
    path: Path | str, *, inputs: tuple[Path | str, ...] = (), directory: bool = False
) -> Path:
    """Refuse an output path that would replace something it must not; return it as a Path.

    A file output (``directory=False``) may only replace an existing *regular* file: never a
    device node, FIFO, socket or directory (``-o /dev/full`` run as root would otherwise turn the
    device into a file), never one of ``inputs`` (the same file under any name). A directory
    output may only be an existing directory. In both cases every existing ancestor must be a
    directory. Raises :class:`InputError` with one line naming the path.
    """
    path = Path(path)
    existing = path.absolute().parent
    for parent in path.absolute().parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise InputError(f"{path}: cannot write here, {parent} is not a directory")
            existing = parent
            break
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: is a dangling symbolic link, refusing to write through it") from None
        return _writable(path, existing)  # it will be created below the nearest existing directory
    except OSError as exc:
        raise InputError(f"{path}: cannot write here ({exc.strerror})") from None
    if directory:
        if not stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: exists and is not a directory ({_kind(info.st_mode)})")
        return _writable(path, path)
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, expected a file name for the output")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: is a {_kind(info.st_mode)}, refusing to replace it with a file")
    for source in inputs:
        try:
            same = os.path.samefile(path, source)
        except OSError:
            continue
        if same:
            raise InputError(f"{path}: is the input file {source}; write the output elsewhere")
    return _writable(path, path.parent)  # replaced by a rename in its directory


def _writable(path: Path, directory: Path) -> Path:
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write here, no permission to write in {directory}")
    return path


def check_output_files(
    directory: Path | str, names: tuple[str, ...], *, inputs: tuple[Path | str, ...] = ()
) -> Path:
    """:func:`check_output_target` for a directory and the named files a command writes into it."""
    directory = check_output_target(directory, directory=True)
    for name in names:
        check_output_target(directory / name, inputs=inputs)
    return directory


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "directory",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISFIFO: "FIFO",
        stat.S_ISSOCK: "socket",
        stat.S_ISREG: "regular file",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")
