"""Making a rename durable: after ``os.replace`` the new directory entry must reach the disk too.

A file written, fsynced and renamed into place can still vanish in a power cut until its
directory is fsynced as well. Used by the vector dataset and by plugins that keep files of their
own (the Qdrant plugin's Edge metadata).
"""

from __future__ import annotations

import os


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory, so the renames in it survive a crash (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened for fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
