"""Low-level file writing shared by the output writers."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to the file descriptor `fd` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
