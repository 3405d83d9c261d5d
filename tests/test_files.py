"""Output paths and temporary files: what may be replaced, and nothing left behind on a signal."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tcr_cli import interruption
from tcr_pipeline.errors import InputError
from tcr_pipeline.files import check_output_target, write_atomic


def test_a_regular_file_or_a_new_name_may_be_written(tmp_path: Path) -> None:
    existing = tmp_path / "old.csv"
    existing.write_text("old\n")
    assert check_output_target(existing) == existing
    assert check_output_target(tmp_path / "new" / "deeper" / "x.csv") == tmp_path / "new" / "deeper" / "x.csv"
    assert check_output_target(tmp_path, directory=True) == tmp_path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: Path("/dev/null"), "is a character device"),
        (lambda d: (os.mkfifo(d / "fifo"), d / "fifo")[1], "is a FIFO"),
        (lambda d: d, "is a directory"),
        (lambda d: ((d / "f").write_text(""), d / "f" / "x")[1], "is not a directory"),
        (lambda d: (os.symlink(d / "gone", d / "dangling"), d / "dangling")[1], "dangling symbolic link"),
        (lambda d: (os.symlink("/dev/null", d / "dev"), d / "dev")[1], "is a character device"),
    ],
    ids=["device", "fifo", "directory", "under-a-file", "dangling-link", "link-to-a-device"],
)
def test_refused_targets(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    target = make(tmp_path)
    with pytest.raises(InputError, match=message):
        check_output_target(target)


def test_the_input_is_refused_under_any_name(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a\n")
    os.link(source, tmp_path / "hard.csv")
    os.symlink(source, tmp_path / "soft.csv")
    for name in ("in.csv", "hard.csv", "soft.csv"):
        with pytest.raises(InputError, match="is the input file"):
            check_output_target(tmp_path / name, inputs=(source,))


def test_a_directory_output_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="exists and is not a directory"):
        check_output_target(tmp_path / "file", directory=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_leaves_no_temporary_file(tmp_path: Path, signum: signal.Signals) -> None:
    """The CLI turns SIGTERM and SIGINT into KeyboardInterrupt, so write_atomic removes its temporary."""
    target = tmp_path / "scores.csv"
    target.write_text("previous\n")

    def write(tmp: Path) -> None:
        tmp.write_text("half of it")
        os.kill(os.getpid(), signum)  # delivered here, in the main thread

    with interruption.stop_on_signals(), pytest.raises(KeyboardInterrupt, match=signum.name):
        write_atomic(target, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]
    assert target.read_text() == "previous\n"
    assert stat.S_ISREG(target.stat().st_mode)
    assert signal.getsignal(signal.SIGTERM) is not interruption.interrupt  # restored after the command
