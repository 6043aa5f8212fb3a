"""Atomic writes: a file (`atomic_path`) or a whole folder (`atomic_folder`) is replaced in one rename.

Temporary files and folders are hidden and end in `.eqx-vae-tmp`, so a leftover from a killed process is never taken
for an image, a latent file or a model: `.pic00.png.k3j2h1.eqx-vae-tmp`, `.vae.4242.a8f7c6.eqx-vae-tmp/`.
"""

import contextlib
import ctypes
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Collection, Iterator

TEMP_SUFFIX = ".eqx-vae-tmp"
_MAX_NAME_IN_TEMP = 80  # keeps temporary names under the usual 255-byte limit
_MAX_CLONED_ENTRIES = 10_000  # other entries a folder may hold for `atomic_folder` to swap it whole


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_path(path: str) -> None:
    """Flushes a file, or a folder's entries, to disk (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if os.path.isdir(path):
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError as error:
        if not os.path.isdir(path) or error.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def temporary_name_prefix(destination: str) -> str:
    return "." + os.path.basename(destination)[:_MAX_NAME_IN_TEMP] + "."


def _missing_folder_error(destination: str, directory: str) -> OSError:
    """Why no file can be made in `directory` to write `destination`: a path above it that is not a folder, or a
    folder that does not exist."""
    current = directory
    while not os.path.lexists(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    if os.path.lexists(current) and not os.path.isdir(current):
        return NotADirectoryError(f"cannot write {destination}: {current} exists and is not a folder")
    return FileNotFoundError(f"cannot write {destination}: its folder {directory} does not exist")


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to `destination`; on success it replaces `destination` in one rename.

    If anything fails before the rename, the temporary file is removed and `destination` is untouched. The temporary
    name is hidden and ends in `.eqx-vae-tmp`, never in the destination's own suffix.

    An existing destination keeps its permission bits; a new one gets the usual ones (0666 less the umask). A link is
    written through, as `atomic_folder` does: the file it points to is replaced and the link kept. The folder must
    exist: FileNotFoundError (or NotADirectoryError) names `destination` otherwise. A destination that is a folder
    (IsADirectoryError) or another kind of non-regular file, such as a device (OSError), is refused.
    """
    destination = os.fspath(destination)
    target = os.path.realpath(destination)  # a link: replace the file it points to, keep the link
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise _missing_folder_error(destination, directory)
    if os.path.isdir(target):
        raise IsADirectoryError(f"cannot write {destination}: it is a folder")
    if os.path.exists(target) and not os.path.isfile(target):
        raise OSError(f"cannot write {destination}: it exists and is not a regular file")
    try:
        handle, temporary = tempfile.mkstemp(prefix=temporary_name_prefix(target), suffix=TEMP_SUFFIX, dir=directory)
    except OSError as error:
        message = f"cannot write {destination}: no file can be made in {directory}: {error.strerror}"
        raise type(error)(message) from error
    os.close(handle)
    try:
        yield temporary
        _fsync_path(temporary)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_current_umask()  # mkstemp makes 0600 files; give the usual permissions
        os.chmod(temporary, mode)
        os.replace(temporary, target)
        _fsync_path(directory)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)


# Folders ----------------------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(first: str, second: str) -> bool:
    """Swaps two existing paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`, through ctypes).

    Returns False, having changed nothing, where that is unavailable (another OS, a C library without `renameat2`, a
    filesystem that does not support the flag); raises OSError for any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)


def _check_folder_path(directory: str) -> None:
    """A clear error when `directory`, or a folder above it, exists but is not a folder."""
    current = directory
    while True:
        if os.path.lexists(current):
            if not os.path.isdir(current):
                what = "exists" if current == directory else f"lies under {current}, which exists"
                raise NotADirectoryError(f"{directory} {what} and is not a folder")
            return
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _clone_entries(source: str, target: str, skip: Collection[str], budget: list[int]) -> None:
    """Recreates the tree under `source` in `target` with hard links (no data copied), leaving out the top-level
    names in `skip`. Raises OSError where that is impossible (a filesystem without hard links, a mount point inside,
    a special file, more than `_MAX_CLONED_ENTRIES` entries)."""
    with os.scandir(source) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        if name in skip:
            continue
        budget[0] -= 1
        if budget[0] < 0:
            raise OSError(errno.E2BIG, f"more than {_MAX_CLONED_ENTRIES} entries to carry over", source)
        path, new = os.path.join(source, name), os.path.join(target, name)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(path), new)
        elif stat.S_ISREG(info.st_mode):
            os.link(path, new, follow_symlinks=False)
        elif stat.S_ISDIR(info.st_mode):
            if os.path.ismount(path):
                raise OSError(errno.EXDEV, "a mount point inside the folder", path)
            os.mkdir(new)
            _clone_entries(path, new, (), budget)
            os.chmod(new, stat.S_IMODE(info.st_mode))
        else:
            raise OSError(errno.EPERM, "not a regular file, folder or link", path)


_STAGE_PATTERN = re.compile(r"(?P<pid>\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")


def _remove_stale_stages(parent: str, name: str) -> None:
    """Removes temporary folders that saves of `name` by processes no longer alive left in `parent`."""
    prefix = temporary_name_prefix(name)
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        match = _STAGE_PATTERN.match(entry, len(prefix)) if entry.startswith(prefix) else None
        if match is None or int(match.group("pid")) == os.getpid():
            continue
        try:
            os.kill(int(match.group("pid")), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except OSError:
            continue


def _make_stage(parent: str, name: str) -> str:
    return tempfile.mkdtemp(prefix=f"{temporary_name_prefix(name)}{os.getpid()}.", suffix=TEMP_SUFFIX, dir=parent)


def _finish_files(root: str, names: Collection[str]) -> None:
    """Gives the staged files the usual permissions of new files (some writers make them 0600) and flushes them and
    their folder to disk."""
    mode = 0o666 & ~_current_umask()
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.chmod(path, mode)
            _fsync_path(path)
    _fsync_path(root)


@contextlib.contextmanager
def atomic_folder(
    directory: str | os.PathLike, *, replace: Collection[str], remove: Collection[str] = ()
) -> Iterator[str]:
    """Yields an empty staging folder for the files named in `replace`; on success `directory` changes in one step
    from its old contents to: the old contents without `replace` and `remove`, plus the staged files.

    How, by case (a kill at any moment leaves the old folder or the new one at `directory`, except where noted):
    - `directory` does not exist: the stage, a sibling, is renamed to it.
    - it exists (Linux): the stage, a sibling, gets hard links to every other entry of the folder (no data is copied)
      and is swapped with it by `renameat2(RENAME_EXCHANGE)`; the old folder is then deleted.
    - where that swap is unsupported (another OS or filesystem): the old folder is renamed to a sibling and the stage
      renamed into place; a kill between the two leaves no `directory` but the complete old folder beside it, hidden
      and ending in `.eqx-vae-tmp`.
    - where no sibling folder can replace it (an unwritable parent, a mount point, no hard links, a special file or
      over 10,000 other entries in the folder): the stage is made inside the folder and its files are moved in one by
      one, in the order of `replace` (not atomic as a whole).

    The folder keeps its permissions; processes with open files in it keep reading the old version. Failures leave
    `directory` as it was and remove the stage. Stages left by killed processes are removed on the next call.
    """
    directory = os.path.abspath(os.fspath(directory))
    _check_folder_path(directory)
    directory = os.path.realpath(directory)  # a link to a folder: replace the folder, keep the link
    parent, name = os.path.split(directory)
    replaced = set(replace) | set(remove)
    os.makedirs(parent, exist_ok=True)
    existed = os.path.isdir(directory)
    if existed:  # never while the folder is missing: a stage may then hold the only copy of the old folder
        _remove_stale_stages(parent, name)
        _remove_stale_stages(directory, name)
    stage, in_place, leftovers = None, False, []
    try:
        try:
            stage = _make_stage(parent, name)
            if existed:
                if os.path.ismount(directory) or os.stat(parent).st_dev != os.stat(directory).st_dev:
                    raise OSError(errno.EXDEV, "a mount point", directory)
                _clone_entries(directory, stage, replaced, [_MAX_CLONED_ENTRIES])
        except OSError:
            if not existed:
                raise
            if stage is not None:
                shutil.rmtree(stage)
            stage, in_place = _make_stage(directory, name), True
        yield stage
        if in_place:
            _finish_files(stage, replace)
            for entry in replace:
                if os.path.lexists(os.path.join(stage, entry)):
                    os.replace(os.path.join(stage, entry), os.path.join(directory, entry))
            for entry in remove:
                if os.path.lexists(os.path.join(directory, entry)):
                    os.remove(os.path.join(directory, entry))
            _fsync_path(directory)
            return
        # mkdtemp makes 0700 folders: give the old folder's permissions, or the usual ones for a new folder
        os.chmod(stage, stat.S_IMODE(os.stat(directory).st_mode) if existed else 0o777 & ~_current_umask())
        _finish_files(stage, replace)
        if not existed:
            os.rename(stage, directory)
            stage = None
        elif not exchange_paths(stage, directory):
            backup = _make_stage(parent, name)
            leftovers.append(backup)
            os.rename(directory, os.path.join(backup, "old"))
            try:
                os.rename(stage, directory)
            except BaseException:
                os.rename(os.path.join(backup, "old"), directory)
                raise
            stage = None
        _fsync_path(parent)
    finally:
        for path in [stage, *leftovers]:
            if path is not None and os.path.lexists(path):
                shutil.rmtree(path)
