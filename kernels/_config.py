"""Numba settings shared by every kernel: one place for the flags, so no kernel hard-codes its own.

- ``FASTMATH`` allows reassociation (vectorised float reductions, ~25x on sums) and contraction
  (FMA) but not ``nnan``/``ninf``: NaN and Inf keep their IEEE behaviour, so a diverging run shows up
  as NaN instead of being optimised into nonsense.
- ``jit_ieee`` (no fastmath at all) is for element-wise formulas that must equal NumPy's bit for
  bit: the optimizers' updates, where a fused multiply-add or an approximate reciprocal square
  root would change the trajectory the book's code computes.
- ``jit_borrowing`` is for the kernels that a step calls many times, which allocate nothing: they
  run without Numba's reference counting, whose atomic operations on every array passed cost more
  than a short kernel's work.
- ``error_model="numpy"``: division follows NumPy (inf/nan) instead of raising, which removes a
  branch per division.
- ``CACHE``: compiled code is kept on disk, and Numba loads it back by *unpickling* its index
  files, so whoever can write to the cache folder can run code in this process. ``CACHE`` is on only
  when the folder Numba will use for these kernels is private (``folder_problem``): Numba's own
  choice (next to the source, else its per-user folder, or ``NUMBA_CACHE_DIR`` when set), else the
  per-user folder, else a folder of our own in the temporary directory, created 0700. When none
  is private, caching is off (kernels compile on every start) with one RuntimeWarning saying why.
  A ``NUMBA_CACHE_DIR`` that is not private is the user's choice and is left as it is: fastbp's
  kernels then just do not cache.
- Freshness: Numba keeps a cached function while *its own* file is unchanged, but a kernel's
  machine code includes the callees it inlined from other files (step.py builds on sparse.py,
  _simd.py, softmax_ce.py). ``_KernelsLocator`` gives every kernel one source stamp, the digest of
  all the files in this folder, so editing any of them recompiles all of them; a stale copy of an
  edited callee segfaulted once.
- Concurrency: Numba names a new entry's data file by the first number free in the index it read;
  two processes saving two signatures of one kernel at once can take the same name, and the index
  then points a signature at the other's machine code (numba#10128; it segfaulted the training
  step here). ``_LockedCacheFile`` saves under an exclusive lock on the cache folder and loads
  under a shared one (``fcntl``; where there is none, as on Windows, without).
"""
import contextlib
import hashlib
import os
import stat
import tempfile
import warnings

import numba
from numba.core import caching

try:
    import fcntl
except ImportError:   # Windows
    fcntl = None

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
ERROR_MODEL = "numpy"


def _uid():
    """This process's effective user id, or None where there is none (Windows, whose per-user
    temporary and cache folders are private already). Tests replace it to play another user."""
    geteuid = getattr(os, "geteuid", None)
    return None if geteuid is None else geteuid()


def _ancestors(path):
    """The folders above ``path``, from its parent up to the root."""
    parent = os.path.dirname(path)
    while parent != path:
        yield parent
        path, parent = parent, os.path.dirname(parent)


def folder_problem(path, owners=None):
    """None if nobody but this user (and root) can put files into the folder ``path``, else why.

    The folder itself must be a real folder, not a symlink, owned by one of ``owners`` (default:
    this user only) and not writable by group or others. Every folder above it, as written and
    with symlinks resolved, must belong to this user or root, and if others may write to it, carry
    the sticky bit (as /tmp does: then only we can rename or remove what is ours inside it).
    """
    uid = _uid()
    if uid is None:
        return None
    owners = (uid,) if owners is None else owners
    path = os.path.abspath(path)
    try:
        st = os.lstat(path)
    except OSError as error:
        return f"{path}: {error.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if st.st_uid not in owners:
        return f"{path} belongs to user id {st.st_uid}, not to this user ({uid})"
    if st.st_mode & 0o022:
        return f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    for above in dict.fromkeys([*_ancestors(path), *_ancestors(os.path.realpath(path))]):
        try:
            st = os.lstat(above)
        except OSError as error:
            return f"{above}: {error.strerror}"
        if st.st_uid not in (uid, 0):
            return f"{above} (above {path}) belongs to user id {st.st_uid}"
        if (not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022
                and not st.st_mode & stat.S_ISVTX):
            return (f"{above} (above {path}) can be written by other users without the sticky "
                    f"bit (mode {stat.S_IMODE(st.st_mode):04o})")
    return None


_HERE = os.path.dirname(os.path.abspath(__file__))


def sources_digest(folder=_HERE):
    """SHA-256 over the names and contents of the .py files in ``folder``."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()


class _KernelsLocator(caching._CacheLocator):
    """The folder Numba's own locators pick for a kernel of this folder, with one source stamp
    for the whole folder (see the module docstring); any other function is not ours to place."""

    _stamp = None

    def __init__(self, inner):
        self._inner = inner

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        if _KernelsLocator._stamp is None:
            _KernelsLocator._stamp = sources_digest()
        return _KernelsLocator._stamp

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _HERE:
            return None
        for other in caching.CacheImpl._locator_classes:
            inner = None if other is cls else other.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


if _KernelsLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _KernelsLocator)


def _probe():
    """A function in this folder, to ask Numba where it would cache this folder's kernels."""


def _numba_cache_folder():
    """The folder Numba would cache this folder's kernels in (None: nowhere writable).

    Numba creates the folder if it can while answering; under umask 077, so what it creates is
    private (0700) whatever the process's umask is."""
    umask = os.umask(0o077)
    try:
        return caching.CompileResultCacheImpl(_probe).locator.get_cache_path()
    except RuntimeError:   # "no locator available": no writable folder anywhere
        return None
    finally:
        os.umask(umask)


def _cache_enabled():
    """True when Numba will cache the kernels in a private folder (pointing
    ``numba.config.CACHE_DIR`` at a fallback if need be); else False, with one RuntimeWarning."""
    uid = _uid()
    users_choice = bool(numba.config.CACHE_DIR)
    user_wide = caching.AppDirs(appname="numba", appauthor=False).user_cache_dir
    fallback = os.path.join(tempfile.gettempdir(), f"fastbp-numba-cache-{'user' if uid is None else uid}")
    # None: wherever Numba would put them; the others through NUMBA_CACHE_DIR
    candidates = [None] if users_choice else [None, user_wide, fallback]
    problems = []
    for base in candidates:
        if base == fallback:
            try:
                os.mkdir(fallback, 0o700)
            except FileExistsError:
                pass   # ours from an earlier run, or planted by someone: folder_problem tells
            except OSError as error:
                problems.append(f"{fallback}: {error.strerror}")
                continue
            if (problem := folder_problem(fallback)) is not None:   # before Numba looks inside
                problems.append(problem)
                continue
        if base is not None:
            numba.config.CACHE_DIR = base
        folder = _numba_cache_folder()
        problem = ("no writable folder" if folder is None else folder_problem(folder))
        if problem is None:
            return True
        if problem not in problems:
            problems.append(problem)
    if not users_choice:
        numba.config.CACHE_DIR = ""
    where = "the folder in NUMBA_CACHE_DIR is not private: " if users_choice else ""
    warnings.warn(f"fastbp: compiled kernels are not cached, so they compile on every start: "
                  f"{where}{'; '.join(problems)}. To cache them, set NUMBA_CACHE_DIR to a folder of "
                  f"your own that only you can write to (e.g. mkdir -m 700 ~/.numba-cache).",
                  RuntimeWarning, stacklevel=2)
    return False


CACHE = _cache_enabled()


@contextlib.contextmanager
def _folder_lock(folder, exclusive):
    """Hold a lock on the cache folder (its file .fastbp.lock): exclusive to write, shared to read.
    A folder that does not exist yet has nothing to read: no lock."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(os.path.join(folder, ".fastbp.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)   # (releases the lock)


class _LockedCacheFile(caching.IndexDataCacheFile):
    """Numba's index and data files of one kernel, written and read under the folder's lock."""

    def save(self, key, data):
        with _folder_lock(self._cache_path, exclusive=True):
            super().save(key, data)

    def load(self, key):
        with _folder_lock(self._cache_path, exclusive=False):
            return super().load(key)


def _njit(fn, **options):
    """numba.njit(**options)(fn), its on-disk cache (if any) saved and loaded under a lock."""
    dispatcher = numba.njit(**options)(fn)
    cache = getattr(dispatcher, "_cache", None)
    if isinstance(cache, caching.Cache):   # (no cache: caching off, or NUMBA_DISABLE_JIT=1)
        plain = cache._cache_file
        cache._cache_file = _LockedCacheFile(plain._cache_path, plain._index_name[:-len(".nbi")],
                                             plain._source_stamp)
    return dispatcher


def jit(fn=None, **extra):
    """``numba.njit`` with fastbp's flags: serial kernels."""
    options = dict(cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, nogil=True, _nrt=True,
                   **extra)
    return (lambda f: _njit(f, **options)) if fn is None else _njit(fn, **options)


def jit_borrowing(fn):
    """``jit`` for a kernel that only borrows the arrays it is given: it allocates none and returns
    none (nor a tuple holding one), and runs without Numba's reference counting (NRT). With it, a
    call increments and decrements the count of every array it is passed, those in tuples too (a
    team's workspace holds dozens), each an atomic operation, which waits for the thread's
    pending stores, on counts that the other thread of a team changes as well: a row's product
    (sparse._times_slice, 10 nonzeros) took ~270 cycles a call with it, ~40 without (a Zen 5).
    Numba refuses to compile such a kernel if it allocates or returns a view; one that returned
    an array it was passed would have its caller release a reference it was never given, so none
    may. (The other decorators say ``_nrt=True``: a kernel that leaves it unset is compiled with
    the flag of the caller that first needs it, and keeps that code for every later caller.)"""
    return _njit(fn, cache=CACHE, fastmath=FASTMATH, error_model=ERROR_MODEL, nogil=True,
                 _nrt=False)


def jit_exact(fn):
    """``jit`` without reassociation, for formulas whose order of operations is the point
    (log s + (m - x) must not become (log s + m) - x). The flags stay on the instructions
    when such a function is inlined into a ``jit`` kernel."""
    return _njit(fn, cache=CACHE, fastmath=FASTMATH - {"reassoc"}, error_model=ERROR_MODEL,
                 nogil=True, _nrt=True)


def jit_ieee(fn):
    """``jit`` with plain IEEE arithmetic: every operation rounded as written, no FMA contraction,
    no reciprocal or approximate square root; for element-wise updates that must equal NumPy's.

    ``fastmath=False`` is said explicitly: Numba compiles a function whose fastmath is left unset
    with the flags of the caller that first needs it, and keeps that code for every later caller
    (a fastmath training step calling these updates made them contract into FMAs)."""
    return _njit(fn, cache=CACHE, fastmath=False, error_model=ERROR_MODEL, nogil=True, _nrt=True)
