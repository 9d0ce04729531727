"""Atomic file writes shared by the command line and :mod:`numpyro_flows.serialization`.

A file is written to a temporary file in the destination's folder and renamed onto the
destination, so an existing file is never left half-written. The temporary file is
created private (``mkstemp`` makes it ``0600``); before the rename it gets the mode that
the process's umask gives any new file (``0666 & ~umask``, usually ``0644``), so results
are as readable as files written with ``open(path, "w")``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def new_file_mode() -> int:
    """The permission bits a newly created file gets under the current umask."""
    # The umask can only be read by setting it; put it straight back.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)``, then renames the temporary file onto ``path``.

    Args:
        path: the destination file.
        write: writes the content to the path it is given (e.g.
            ``lambda tmp: idata.to_netcdf(tmp)``); it may replace the file there.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomically(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`write_atomically`), flushed to
    disk before the rename."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(path, write)
