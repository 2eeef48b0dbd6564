"""Numba's on-disk cache is code that runs (its index files are unpickled): fastbp caches its kernels
only in a folder nobody else can write to, and otherwise compiles them on every start with one
warning. "Another local user" is played with folders of loose modes and, since the tests may run as
root (who owns everything here), by replacing ``_config._uid`` or by chown when root."""
import importlib.util
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings

import numba
import numpy as np
import pytest
from numba.core import caching

import fastbp
from fastbp import Relu
from fastbp.kernels import _config

OTHER_UID = 4242
ROOT = os.geteuid() == 0


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    """_cache_enabled() in a sandbox: NUMBA_CACHE_DIR unset, a shared temporary folder like /tmp
    (mode 1777) and a home cache folder under tmp_path. -> namespace with ``readonly(*roots)``
    (files cannot be created under them, as on a read-only install or home), ``fallback`` (the
    temp folder fastbp would use) and ``probe_in(folder)`` (Numba asked about a source file there)."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    home_cache = tmp_path / "home-cache"
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home_cache))
    real_temporary_file = tempfile.TemporaryFile

    class Env:
        user_wide = os.path.join(home_cache, "numba")
        fallback = os.path.join(shared, f"fastbp-numba-cache-{os.geteuid()}")

        @staticmethod
        def readonly(*roots):
            def temporary_file(*args, dir=None, **kwargs):
                if dir is not None and any(os.path.abspath(dir).startswith(str(r)) for r in roots):
                    raise PermissionError(13, "Read-only file system", dir)
                return real_temporary_file(*args, dir=dir, **kwargs)
            monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)

        @staticmethod
        def probe_in(folder):
            """Numba is asked about a source file in ``folder`` instead of kernels/."""
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "probe.py").write_text("def probe():\n    pass\n")
            spec = importlib.util.spec_from_file_location("fastbp_test_probe", folder / "probe.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            monkeypatch.setattr(_config, "_probe", module.probe)

    return Env


INSTALL = os.path.dirname(os.path.abspath(_config.__file__))


def test_numbas_own_private_folder_is_used(cache_env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _config._cache_enabled() is True
    assert numba.config.CACHE_DIR == ""    # next to the source, as Numba chose


def test_falls_back_to_a_private_temp_folder_on_a_read_only_install_and_home(cache_env):
    cache_env.readonly(INSTALL, cache_env.user_wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _config._cache_enabled() is True
    assert numba.config.CACHE_DIR == cache_env.fallback
    assert mode(cache_env.fallback) == 0o700
    leaf = _config._numba_cache_folder()
    assert os.path.dirname(leaf) == cache_env.fallback and mode(leaf) == 0o700


def test_folders_numba_creates_are_private_whatever_the_umask(cache_env, tmp_path):
    cache_env.probe_in(tmp_path / "pkg")
    cache_env.readonly(tmp_path / "pkg")     # so Numba picks its per-user folder, creating it
    old = os.umask(0o002)
    try:
        assert _config._cache_enabled() is True
    finally:
        os.umask(old)
    leaf = _config._numba_cache_folder()
    assert leaf.startswith(cache_env.user_wide)
    for folder in (cache_env.user_wide, leaf):
        assert mode(folder) == 0o700, folder


def test_a_source_folder_cache_others_can_write_to_is_skipped(cache_env, tmp_path):
    """umask 002 makes __pycache__ group-writable: not used; the per-user folder is."""
    cache_env.probe_in(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__").mkdir(mode=0o775)
    (tmp_path / "pkg" / "__pycache__").chmod(0o775)
    assert _config._cache_enabled() is True
    assert numba.config.CACHE_DIR == cache_env.user_wide


def plant_fallback(cache_env, monkeypatch, how):
    """The temp fallback, created first by 'another user'."""
    path = cache_env.fallback
    if how == "mode 0777":
        os.mkdir(path)
        os.chmod(path, 0o777)
        return "can be written by other users (mode 0777)"
    if how == "mode 0775":
        os.mkdir(path)
        os.chmod(path, 0o775)
        return "can be written by other users (mode 0775)"
    if how == "another owner":
        os.mkdir(path, 0o755)
        if ROOT:
            os.chown(path, OTHER_UID, OTHER_UID)
        else:    # we cannot give it away: become someone else instead
            monkeypatch.setattr(_config, "_uid", lambda: OTHER_UID)
        return "belongs to user id"
    if how == "symlink":
        target = os.path.join(os.path.dirname(path), "elsewhere")
        os.mkdir(target, 0o700)
        os.symlink(target, path)
        return "is a symbolic link"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["mode 0777", "mode 0775", "another owner", "symlink"])
def test_a_temp_fallback_planted_by_someone_else_is_never_used(cache_env, monkeypatch, how):
    cache_env.readonly(INSTALL, cache_env.user_wide)
    reason = plant_fallback(cache_env, monkeypatch, how)
    with pytest.warns(RuntimeWarning) as record:
        assert _config._cache_enabled() is False
    assert len(record) == 1
    message = str(record[0].message)
    assert "not cached" in message and reason in message and cache_env.fallback in message
    assert "NUMBA_CACHE_DIR" in message and "only you can write to" in message
    assert numba.config.CACHE_DIR == ""
    assert "\n" not in message


def test_nothing_writable_turns_caching_off_with_one_warning(cache_env):
    cache_env.readonly(INSTALL, cache_env.user_wide, cache_env.fallback)
    with pytest.warns(RuntimeWarning, match=r"not cached.*NUMBA_CACHE_DIR") as record:
        assert _config._cache_enabled() is False
    assert len(record) == 1 and numba.config.CACHE_DIR == ""


# --- NUMBA_CACHE_DIR: the user's choice, used when private, else left alone and not used ---------

def test_a_private_numba_cache_dir_is_used_as_it_is(cache_env, monkeypatch, tmp_path):
    mine = tmp_path / "mine"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(mine))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _config._cache_enabled() is True
    assert numba.config.CACHE_DIR == str(mine)
    assert mode(mine) == 0o700      # created by Numba, under fastbp's umask 077


def test_a_sticky_shared_folder_as_numba_cache_dir_is_safe_when_our_subfolder_is(cache_env, monkeypatch,
                                                                                 tmp_path):
    """Like NUMBA_CACHE_DIR=/tmp: others may create files in it, but not in fastbp's own subfolder,
    which must be ours and private; the sticky bit stops them renaming it."""
    shared = tmp_path / "shared-tmp"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(shared))
    assert _config._cache_enabled() is True
    leaf = _config._numba_cache_folder()
    assert os.path.dirname(leaf) == str(shared) and mode(leaf) == 0o700


@pytest.mark.parametrize("how", ["world-writable", "another owner", "planted subfolder"])
def test_a_numba_cache_dir_others_can_write_to_is_not_used(cache_env, monkeypatch, tmp_path, how):
    chosen = tmp_path / "chosen"
    if how == "world-writable":
        chosen.mkdir()
        chosen.chmod(0o777)        # no sticky bit: anyone can replace our subfolder
        reason = "can be written by other users without the sticky bit"
    elif how == "another owner":
        chosen.mkdir(mode=0o755)
        if ROOT:
            os.chown(chosen, OTHER_UID, OTHER_UID)
        else:
            monkeypatch.setattr(_config, "_uid", lambda: OTHER_UID)
        reason = "belongs to user id"
    else:                          # a sticky shared folder where someone made our subfolder first
        chosen = tmp_path / "shared-tmp"
        monkeypatch.setattr(numba.config, "CACHE_DIR", str(chosen))
        leaf = caching.UserProvidedCacheLocator(_config._probe, _config.__file__).get_cache_path()
        os.mkdir(leaf)
        os.chmod(leaf, 0o777)
        reason = "can be written by other users (mode 0777)"
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(chosen))
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR is not private") as record:
        assert _config._cache_enabled() is False
    assert len(record) == 1 and reason in str(record[0].message), str(record[0].message)
    assert numba.config.CACHE_DIR == str(chosen)   # the user's setting is theirs to change


def test_folder_problem(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert _config.folder_problem(private) is None
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    inside = loose / "inside"
    inside.mkdir(mode=0o700)
    assert "can be written by other users without the sticky bit" in _config.folder_problem(inside)
    loose.chmod(0o1777)
    assert _config.folder_problem(inside) is None
    link = tmp_path / "link"
    link.symlink_to(private)
    assert "is a symbolic link" in _config.folder_problem(link)
    (tmp_path / "a-file").write_text("")
    assert "is not a folder" in _config.folder_problem(tmp_path / "a-file")
    assert "No such file" in _config.folder_problem(tmp_path / "absent")
    # a folder reached through a symlinked folder owned by someone else is not trusted either
    if ROOT:
        hop = tmp_path / "hop"
        hop.symlink_to(private)
        os.lchown(hop, OTHER_UID, OTHER_UID)
        (private / "sub").mkdir(mode=0o700)
        assert "belongs to user id 4242" in _config.folder_problem(hop / "sub")


# --- end to end: a planted index is never unpickled ---------------------------------------------

class Evil:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('planted code ran')",)


PLANTED_RUN = textwrap.dedent("""
    import os, sys, tempfile, warnings
    readonly, fake_uid = sys.argv[1].split(os.pathsep), int(sys.argv[2])
    real = tempfile.TemporaryFile
    def temporary_file(*args, dir=None, **kwargs):   # a read-only install and home
        if dir is not None and any(os.path.abspath(dir).startswith(r) for r in readonly):
            raise PermissionError(13, "Read-only file system", dir)
        return real(*args, dir=dir, **kwargs)
    tempfile.TemporaryFile = temporary_file
    if fake_uid >= 0:           # not root: play another user instead of chown
        os.getuid = os.geteuid = lambda: fake_uid
    import numpy as np
    import fastbp
    from fastbp.kernels import _config
    assert fastbp.Relu().forward(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]
    import numba
    print("CACHE", _config.CACHE, "CACHE_DIR", numba.config.CACHE_DIR)
""")


def planted_index(folder, marker):
    """An evil index for relu_forward in ``folder``, the kernels' cache subfolder of a cache dir."""
    leaf = os.path.join(folder, caching.UserProvidedCacheLocator.get_suitable_cache_subpath(
        fastbp.kernels.activations.__file__))
    os.makedirs(leaf, exist_ok=True)
    kernel = fastbp.kernels.relu_forward
    impl = caching.CompileResultCacheImpl(getattr(kernel, "py_func", kernel))   # (NUMBA_DISABLE_JIT=1)
    with open(os.path.join(leaf, impl.filename_base + ".nbi"), "wb") as f:
        f.write(pickle.dumps(Evil(str(marker))))
    return leaf


@pytest.mark.parametrize("how", ["temp fallback of mode 0777", "temp fallback of another user",
                                 "NUMBA_CACHE_DIR writable by all"])
def test_a_planted_cache_index_is_never_loaded(tmp_path, how):
    """Read-only install and home; someone made fastbp's cache folder first and put an index in it
    that runs code when unpickled. The kernels must not load it: caching is off, with a warning."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    home_cache = tmp_path / "home-cache"
    marker = tmp_path / "MARKER"
    fake_uid = -1
    env = {**os.environ, "TMPDIR": str(shared), "XDG_CACHE_HOME": str(home_cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    if how == "NUMBA_CACHE_DIR writable by all":
        cache_dir = tmp_path / "everyones"
        cache_dir.mkdir()
        cache_dir.chmod(0o777)
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    else:
        uid = os.geteuid() if ROOT or how.endswith("0777") else OTHER_UID
        cache_dir = shared / f"fastbp-numba-cache-{uid}"
        cache_dir.mkdir()
        if how.endswith("0777"):
            cache_dir.chmod(0o777)
        elif ROOT:
            os.chown(cache_dir, OTHER_UID, OTHER_UID)
        else:
            fake_uid = OTHER_UID
    leaf = planted_index(cache_dir, marker)
    if ROOT and how == "temp fallback of another user":
        for folder in (cache_dir, leaf):
            os.chown(folder, OTHER_UID, OTHER_UID)
    readonly = os.pathsep.join([INSTALL, str(home_cache)])
    out = subprocess.run([sys.executable, "-c", PLANTED_RUN, readonly, str(fake_uid)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert not marker.exists(), f"the planted index was unpickled: {out.stdout} {out.stderr}"
    assert out.returncode == 0, out.stderr
    assert "CACHE False" in out.stdout, out.stdout
    warned = [line for line in out.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1 and "not cached" in warned[0] and "NUMBA_CACHE_DIR" in warned[0], out.stderr


def test_the_cache_setting_is_left_as_it_was():
    """Runs after the tests above: monkeypatch put numba.config.CACHE_DIR back."""
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")
    assert Relu().forward(np.array([-1.0, 2.0])).tolist() == [0.0, 2.0]


# --- freshness: a kernel's cached machine code includes callees inlined from other files ------

def _kernel_dispatchers():
    """Every compiled function defined in fastbp.kernels' modules."""
    import importlib
    import pkgutil

    import fastbp.kernels as package
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"fastbp.kernels.{info.name}")
        found += [v for v in vars(module).values()
                  if isinstance(v, numba.core.dispatcher.Dispatcher) and v.__module__ == module.__name__]
    return found


def test_every_kernel_is_stamped_with_the_digest_of_the_whole_kernels_folder():
    """So an edit to any kernel file (say sparse.py) makes step.py's cached kernels stale too;
    Numba alone keys each function on its own file only."""
    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: kernels run as Python, nothing is compiled or cached")
    assert _config.CACHE, "the test environment caches (a private folder is available)"
    dispatchers = _kernel_dispatchers()
    assert len(dispatchers) > 20
    digest = _config.sources_digest()
    for dispatcher in dispatchers:
        locator = dispatcher._cache._impl.locator
        assert isinstance(locator, _config._KernelsLocator), dispatcher
        assert locator.get_source_stamp() == digest


def test_the_digest_changes_when_any_kernel_file_changes(tmp_path):
    import shutil
    folder = tmp_path / "kernels"
    shutil.copytree(os.path.dirname(_config.__file__), folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = _config.sources_digest(folder)
    assert before == _config.sources_digest()
    for name in ("sparse.py", "_simd.py", "softmax_ce.py"):
        path = folder / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        assert _config.sources_digest(folder) != before, name
        path.write_bytes(original)
    assert _config.sources_digest(folder) == before


def test_functions_outside_fastbp_kernels_keep_numbas_own_locators(tmp_path):
    source = tmp_path / "elsewhere.py"
    source.write_text("def f():\n    return 1\n")
    spec = importlib.util.spec_from_file_location("elsewhere", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert _config._KernelsLocator.from_function(module.f, str(source)) is None


# --- concurrency: processes saving different signatures of one kernel at once --------------------

RACE_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from numba.core import caching
    from fastbp.kernels import _config, activations
    barrier, others, me, dtype, ndim = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    if sys.argv[6] == "unlocked":   # (only to show the test catches the race)
        _config.fcntl = None
    real_save_index = caching.IndexDataCacheFile._save_index

    def save_index(self, overloads):   # meet the others once the data file's name is chosen
        open(os.path.join(barrier, me), "w").close()
        deadline = time.time() + 1.0
        while len(os.listdir(barrier)) < others and time.time() < deadline:
            time.sleep(0.005)
        real_save_index(self, overloads)

    caching.IndexDataCacheFile._save_index = save_index
    x = np.arange(-3, 5, dtype=dtype).reshape((8,) if ndim == 1 else (2, 4))
    activations.relu_forward(x)
""")

RACE_CHECK = textwrap.dedent("""
    import numpy as np
    from fastbp.kernels import activations
    for dtype in ("float32", "float64"):
        for shape in ((8,), (2, 4)):
            x = np.arange(-3, 5, dtype=dtype).reshape(shape)
            y, mask = activations.relu_forward(x)
            assert y.dtype == x.dtype and (y == np.maximum(x, 0)).all() and (mask == (x <= 0)).all()
    print("ok", activations.relu_forward.stats.cache_hits)
""")


def _race(tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    cases = [("float32", 1), ("float64", 1), ("float32", 2), ("float64", 2)]
    children = [subprocess.Popen([sys.executable, "-c", RACE_CHILD, str(barrier), str(len(cases)),
                                  f"{dtype}-{ndim}", dtype, str(ndim), mode], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for dtype, ndim in cases]
    for child in children:
        assert child.wait(timeout=300) == 0, child.stderr.read()
    return subprocess.run([sys.executable, "-c", RACE_CHECK], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(sys.platform == "win32", reason="the cache lock uses fcntl (POSIX)")
def test_processes_caching_a_kernel_at_once_do_not_mix_up_its_signatures(tmp_path):
    """Four processes compile four signatures of one kernel into one empty cache and all reach
    Numba's cache write together: each signature must load its own machine code afterwards
    (without the lock they all name their data file .1, and three signatures load another's)."""
    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled or cached")
    out = _race(tmp_path, "locked")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "ok"
