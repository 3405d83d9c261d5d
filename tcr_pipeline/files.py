"""Small file helpers: atomic writes, content hashes, checks of output paths, and the permissions of
shared folders.

Permissions follow the usual Unix rules, so a store on a shared filesystem can be shared with a
lab: files are created ``0o666 & ~umask`` and folders ``0o777 & ~umask``. Below a *setgid*
folder (a folder shared with a group, see :func:`share_with_group`) every new folder is also
group-writable and setgid, and every new file group-readable, whatever the umask.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcr_pipeline.errors import InputError

GROUP_DIR_BITS = stat.S_ISGID | stat.S_IRWXG  # a shared folder: setgid, group rwx
GROUP_FILE_BITS = stat.S_IRGRP  # a file in a shared folder: group-readable
GROUP_WRITABLE_BITS = stat.S_IRGRP | stat.S_IWGRP  # files written in place (SQLite, locks)


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask would race with other threads)."""
    try:
        match = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        match = None
    if match:
        return int(match.group(1), 8)
    mask = os.umask(0o022)  # no /proc (not Linux): the only other way is to set it and put it back
    os.umask(mask)
    return mask


def _shared(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & stat.S_ISGID)
    except OSError:
        return False


def make_dirs(path: Path | str) -> Path:
    """``mkdir -p``; a folder created inside a shared (setgid) folder is shared too."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        if _shared(folder.parent):  # Linux passes on the group and setgid; the group bits it does not
            with contextlib.suppress(OSError):  # created by another process meanwhile: theirs
                folder.chmod(stat.S_IMODE(folder.stat().st_mode) | GROUP_DIR_BITS)
    return path


def share_with_group(folder: Path | str, group: str) -> Path:
    """Create ``folder`` if needed and give it to ``group``: chgrp, group rwx, setgid.

    What the pipeline then creates below it is the group's to read (files) and to add to
    (folders). Raises InputError for an unknown group or a folder this user may not change.
    """
    folder = make_dirs(folder)
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise InputError(f"{folder}: no group {group!r} on this host (TCR_STORE_GROUP)") from None
    info = folder.stat()
    if info.st_gid == gid and info.st_mode & GROUP_DIR_BITS == GROUP_DIR_BITS:
        return folder  # already shared, perhaps by its owner: nothing to change (nor allowed)
    try:
        os.chown(folder, -1, gid)
        folder.chmod(stat.S_IMODE(info.st_mode) | GROUP_DIR_BITS)
    except PermissionError as exc:
        raise InputError(f"{folder}: cannot give it to group {group!r}: {exc.strerror}") from None
    return folder


def share_file_with_group(path: Path | str) -> None:
    """Make a file that is written in place (a SQLite database, a lock file) group-writable,
    when it lies in a shared folder and belongs to this user (only its owner may chmod it)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        info = path.stat()
        if _shared(path.parent) and info.st_uid == os.geteuid():
            path.chmod(stat.S_IMODE(info.st_mode) | GROUP_WRITABLE_BITS)


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
    Lustre included, within one directory). The file gets the mode of a plainly created one
    (``0o666 & ~umask``, mkstemp's is 0600), group-readable in a shared folder. An OSError that
    names no file (a full disk found when the file is closed) is raised naming ``path``.
    """
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:  # one handler from the file's creation on: a Ctrl-C while setting its mode removes it too
        try:
            mode = 0o666 & ~current_umask()
            os.fchmod(fd, mode | GROUP_FILE_BITS if _shared(path.parent) else mode)
        finally:
            os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write text atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return write_atomic(path, write)


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write bytes atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

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
