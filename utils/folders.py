"""The folders a tool writes into: one run at a time (a lock), nothing written or removed outside them (containment),
and its own log and summary files opened without following a planted symbolic link.

Shared by make_heatmap.py (its output folder) and train_wavelet.py (its experiment folder); docs/safety.md, "Files
and folders", states the rules.

- ``FolderLock``: an exclusive lock on ``<folder>/.pieanet.lock``: ``fcntl.flock`` where there is fcntl (Linux, macOS),
  ``msvcrt.locking`` on Windows, else a lock file made with O_EXCL holding the run's process id (taken over when that
  process no longer runs). The kernel drops a flock or msvcrt lock when its
  process dies, so a killed run never leaves a folder locked (its lock file stays, unlocked, and is reused). The file
  is removed on release while still locked; a run that opened it just before locks it only if it is still the file at
  that name. A second run into the folder gets FolderBusy: one line.
- ``inside``: the path checked to lie in the folder after resolving every link, with no symbolic link on the way from
  the folder to it (a planted ``out/sub -> /elsewhere`` is refused, not followed).
- ``open_append``: os.open with O_NOFOLLOW where the system has it, for logs and summaries appended to in place.
- ``open_regular`` / ``check_bookkeeping``: every bookkeeping file (lock, summary, ledger, log) is opened as a
  regular file only, without following a link and without blocking (a FIFO would hang the run); anything else there
  refuses the whole run in one line (WrongFileType, exit 2).
"""

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path

from pieanet.utils.errors import EXIT_FAILED, EXIT_USAGE, PieaError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # everything but Windows
    msvcrt = None  # type: ignore[assignment]

LOCK_NAME = ".pieanet.lock"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where the system has no such flag (Windows has no symlinks to plant)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO never waits for its other end


class WrongFileType(PieaError):
    """A bookkeeping file that is not a regular file (a link, FIFO, folder, device) or, for the ledger, not the
    user's own: the run is refused before any work, in one line."""

    exit_code = EXIT_USAGE


def kind_of(mode):
    """What a file of st_mode ``mode`` is, in words."""
    return (
        "a symbolic link"
        if stat.S_ISLNK(mode)
        else "a folder"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a regular file"
    )


def check_bookkeeping(path, what, own=False):
    """Raise WrongFileType unless ``path`` is missing or a regular file (links not followed); with ``own``, also
    unless it belongs to the user running the tool (a file another user planted proves nothing)."""
    from pieanet.utils.safety import shown

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise WrongFileType(
            f"{shown(path)}: cannot use it as the tool's {what} ({e.strerror}); move it away or choose another folder"
        ) from e
    if not stat.S_ISREG(st.st_mode):
        raise WrongFileType(
            f"{shown(path)}: {kind_of(st.st_mode)}; expected the tool's {what} as a regular file "
            "(move it away or choose another folder)"
        )
    if own and hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise WrongFileType(
            f"{shown(path)}: belongs to another user (uid {st.st_uid}); the tool's {what} must be "
            "yours (move it away or choose another folder)"
        )


def open_regular(path, flags, what, mode=0o666):
    """os.open of ``path`` as a regular file only: never through a link, never waiting on a FIFO; raises
    WrongFileType for any other type and OSError as os.open does (FileNotFoundError without O_CREAT)."""
    from pieanet.utils.safety import shown

    try:
        fd = os.open(path, flags | NOFOLLOW | NONBLOCK, mode)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.EMLINK):
            check_bookkeeping(path, what)  # names the type
            raise WrongFileType(f"{shown(path)}: not a regular file ({e.strerror}); expected the tool's {what}") from e
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise WrongFileType(
            f"{shown(path)}: {kind_of(st.st_mode)}; expected the tool's {what} as a regular file "
            "(move it away or choose another folder)"
        )
    return fd


class FolderBusy(PieaError):
    """Another run holds the folder's lock: one line, a usage error."""

    exit_code = EXIT_USAGE


class OutsideFolder(PieaError, OSError):
    """A path that would lead out of the folder it is meant to be in (through a symbolic link or '..')."""

    exit_code = EXIT_FAILED


class FolderLock:
    """An exclusive lock on ``folder`` (which must exist) for one run; ``acquire`` raises FolderBusy, ``release`` may
    be called more than once. Also a context manager."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd = None
        self.exclusive_file = False

    def acquire(self):
        busy = FolderBusy(
            f"{self.folder}: another run is using this folder (it holds {self.path.name}); wait for it "
            "to finish or choose another folder"
        )
        if fcntl is None and msvcrt is None:
            for _ in range(2):
                try:
                    self.fd = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "lock file")
                except FileExistsError as e:
                    if not self._stale():
                        raise busy from e
                    self.path.unlink(missing_ok=True)  # its process is gone: a killed run's
                    continue
                os.write(self.fd, str(os.getpid()).encode())
                self.exclusive_file = True
                return self
            raise busy
        for _ in range(20):
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT, "lock file")
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                    raise busy from e
                raise
            if same_file(fd, self.path):
                self.fd = fd
                return self
            os.close(fd)  # the holder removed the file on release after this one opened it: lock the new one
        raise busy

    def _stale(self):
        """Whether the O_EXCL lock file names a process that no longer runs (on this machine)."""
        from pieanet.utils.image_io import process_alive

        try:
            pid = int(self.path.read_text().strip() or "0")
        except (OSError, ValueError):
            return False
        return pid > 0 and not process_alive(pid)

    def release(self):
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            try:  # removed while still locked, so a run that opened it meanwhile sees it is gone (same_file)
                self.path.unlink(missing_ok=True)
            except OSError:  # Windows cannot remove an open file: it stays, unlocked
                pass
            if self.exclusive_file:
                pass
            elif fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def same_file(fd, path):
    """Whether ``path`` is still the file open as ``fd`` (not removed or replaced since it was opened)."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino) or os.name == "nt"


def inside(root, path):
    """``path`` (absolute, or relative to the working folder) when it lies in the folder ``root`` with no symbolic
    link between them (the last component may be missing; a link there is refused too, except where ``path`` is
    ``root`` itself); raises OutsideFolder otherwise."""
    root, path = Path(root), Path(path)
    real_root = root.resolve()
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError as e:
        raise OutsideFolder(errno.EXDEV, "outside the output folder", str(path)) from e
    current = real_root
    for part in relative.parts:
        if part in ("..", ""):
            raise OutsideFolder(errno.EXDEV, "leads out of the output folder ('..')", str(path))
        current = current / part
        if current.is_symlink():
            raise OutsideFolder(
                errno.ELOOP,
                f"{current.relative_to(real_root).as_posix()} is a symbolic link; "
                "nothing is written or removed through one",
                str(path),
            )
    return path


def open_append(path, create=True):
    """A file descriptor for appending to ``path`` without following a symbolic link (O_NOFOLLOW), creating it
    (mode 0o666 less the umask) when ``create``; raises OSError (ELOOP for a link)."""
    flags = os.O_WRONLY | os.O_APPEND | NOFOLLOW | (os.O_CREAT if create else 0)
    if Path(path).is_symlink():  # where O_NOFOLLOW is missing, or to name the reason whatever the system says
        raise OSError(
            errno.ELOOP, "a symbolic link; refused (logs and summaries are never written through one)", str(path)
        )
    return open_regular(path, flags, "log or summary")


@contextmanager
def locked(folder, group=None):
    """Hold ``folder``'s lock for the block. Under torchrun (``group``: utils.distributed.Group) only rank 0 takes it,
    for the whole run, and every rank learns whether it could: the ranks of one run never lock each other out, and
    all of them stop with the same FolderBusy when another run holds the folder."""
    main = group is None or group.is_main
    lock, busy = FolderLock(folder), None
    if main:
        try:
            lock.acquire()
        except FolderBusy as e:
            busy = str(e)
    if group is not None:
        busy = next((message for message in group.gather(busy) if message), None)
    if busy:
        lock.release()
        raise FolderBusy(busy)
    try:
        yield lock
    finally:
        lock.release()
