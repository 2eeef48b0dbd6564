"""Files fastbp writes and reads: written whole or not at all, and unpickled only when nobody else
could have written them.

- ``atomic_write(path)``: every file fastbp writes (``--save``, ``--plot``, downloads) goes to a
  temporary file in the same folder that takes its final name only when complete, so a Ctrl-C, a
  full disk or a crash leaves the previous file as it was.
- ``write_problem(path)``: whether ``atomic_write(path)`` can work, asked before hours of training.
- ``make_folders(folder)`` / ``remove_empty(made)``: folders exist only to hold files, so a
  failed download leaves none behind; ``new_file_mode(folder)``: the mode a new file gets there.
- ``open_for_unpickling(path)``: a pickle runs code when loaded; it is read only from a file and a
  folder that no user other than this one (or root) can write to.
"""
import contextlib
import os
import secrets
import stat

from .kernels import _config


def _new_temporary(path):
    """(fd, name) of a new empty file beside ``path``. Created with mode 0666 so the umask gives it
    the permissions of any file the user creates (mkstemp's 0600 would lock out the user's group)."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file to write ``path`` through; it becomes ``path`` (os.replace, atomic)
    only when the body finishes. On any exception, Ctrl-C included, it is deleted and ``path`` is
    left as it was. A replaced file's permission bits are kept."""
    path = os.fspath(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except OSError:
        mode = None
    fd, tmp = _new_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.chmod(tmp, mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_problem(path):
    """None if a file can be written to ``path`` now (by ``atomic_write``), else why not."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{path} is a folder"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    try:
        fd, tmp = _new_temporary(path)
    except OSError as error:
        return f"cannot create files in {folder} ({error.strerror})"
    os.close(fd)
    os.unlink(tmp)
    return None


def make_folders(folder):
    """Make ``folder`` and its missing parents; return those made, deepest first, for
    ``remove_empty``."""
    made = []
    path = os.path.abspath(folder)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        made.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except BaseException:
        remove_empty(made)
        raise
    return made


def remove_empty(made):
    """Remove the folders of ``made`` (deepest first) that hold nothing; stop at one that does."""
    for path in made:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue
        except OSError:   # holds something (or is not ours to remove): it and its parents stay
            break


def new_file_mode(folder):
    """The permission bits a new file in ``folder`` gets (the umask, or the folder's default
    ACL, applied to 0666), found by making one: reading the umask would change it for a moment,
    for every thread of the process."""
    fd, tmp = _new_temporary(os.path.join(folder, "mode"))
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        os.unlink(tmp)


def open_for_unpickling(path):
    """``path`` opened for reading, if what it holds can only come from this user or root.

    The opened file (checked through its descriptor, so a file swapped in after the check is not
    what gets read) must be a regular file owned by this user or root and not writable by group
    or others, and the folder holding it must pass ``kernels._config.folder_problem`` with root
    allowed as owner. Otherwise ValueError saying why and what to do."""
    f = open(path, "rb")
    try:
        uid = _config._uid()
        if uid is None:
            return f
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            problem = "it is not a regular file"
        elif st.st_uid not in (uid, 0):
            problem = f"it belongs to user id {st.st_uid}, not to this user ({uid}) or root"
        elif st.st_mode & 0o022:
            problem = f"other users can write to it (mode {stat.S_IMODE(st.st_mode):04o})"
        else:
            problem = _config.folder_problem(os.path.dirname(os.path.realpath(path)), owners=(uid, 0))
        if problem is not None:
            raise ValueError(f"{path}: not unpickled: {problem}. Unpickling runs code, so fastbp "
                             "reads a pickle only from a file and folder that only you (or root) can "
                             "write to; if you trust this file, copy it into such a folder "
                             "(chmod go-w on both)")
    except BaseException:
        f.close()
        raise
    return f
