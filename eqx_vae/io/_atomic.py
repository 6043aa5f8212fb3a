"""Atomic file writes: a temporary file beside the destination, renamed over it in one step."""

import contextlib
import os
import tempfile
from collections.abc import Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to `destination`; on success it replaces `destination` in one rename.

    If anything fails before the rename, the temporary file is removed and `destination` is untouched.
    """
    destination = os.fspath(destination)
    directory = os.path.dirname(os.path.abspath(destination))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(destination), dir=directory)
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
