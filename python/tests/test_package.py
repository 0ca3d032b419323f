"""How the package finds libspecgrad and what it says when it cannot (the wheel itself: scripts/test-wheel)."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import specgrad as sg

PKG = Path(sg.__file__).resolve().parent
HEADER = PKG.parents[1] / "include" / "specgrad.h"


def _header_version():
    text = HEADER.read_text()
    return tuple(int(re.search(rf"#define SG_VERSION_{k} (\d+)", text).group(1)) for k in ("MAJOR", "MINOR"))


def _fresh_lib_module():
    """python/specgrad/_lib.py loaded again as its own module: its lib() starts unloaded."""
    spec = importlib.util.spec_from_file_location("sg_lib_copy", PKG / "_lib.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lib_module_soname():
    return _fresh_lib_module().SONAME


def _import_in_subprocess(env_update, cwd, pythonpath):
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGRAD_LIB", "PYTHONPATH")}
    env.update(env_update, PYTHONPATH=str(pythonpath))
    return subprocess.run([sys.executable, "-c", "import specgrad"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_version_is_the_headers_and_the_loaded_librarys():
    want = _header_version()
    assert sg.__version__ == "%d.%d" % want
    v = sg.lib().sg_version()
    assert (v // 1000, v % 1000) == want


def test_library_of_another_version_is_refused():
    mod = _fresh_lib_module()
    mod.VERSION = (mod.VERSION[0], mod.VERSION[1] + 1)
    with pytest.raises(ImportError, match=r"is libspecgrad \d+\.\d+; this Python package is for \d+\.\d+"):
        mod.lib()


def test_specgrad_lib_pointing_nowhere_says_so(tmp_path):
    missing = tmp_path / "nope" / "libspecgrad.so"
    r = _import_in_subprocess({"SPECGRAD_LIB": str(missing)}, tmp_path, PKG.parent)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and f"SPECGRAD_LIB points to {missing}, which does not exist" in r.stderr


def test_no_library_anywhere_lists_where_it_looked(tmp_path):
    # in a fresh process: this one has the library loaded already, and dlopen matches loaded sonames
    probe = subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({_lib_module_soname()!r})"],
                           capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip("a libspecgrad is installed on the system's library path, so the package would load it")
    shutil.copytree(PKG, tmp_path / "specgrad", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    r = _import_in_subprocess({}, tmp_path, tmp_path)
    assert r.returncode != 0
    assert "libspecgrad.so not found" in r.stderr, r.stderr
    assert str(tmp_path / "specgrad" / "libspecgrad.so") in r.stderr  # where a wheel keeps it
    assert "pip install ." in r.stderr


def test_library_next_to_the_package_is_found_without_specgrad_lib(tmp_path):
    """A wheel's layout: libspecgrad.so inside the package directory."""
    shutil.copytree(PKG, tmp_path / "specgrad", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(Path(sg.lib()._name).resolve(), tmp_path / "specgrad" / "libspecgrad.so")
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGRAD_LIB", "PYTHONPATH")}
    code = "import specgrad, numpy as np; print(specgrad.lib()._name); print(specgrad.eigvalsh(np.eye(2) * 2))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(tmp_path / "specgrad" / "libspecgrad.so")


def test_editable_layout_finds_the_library_on_the_package_path(tmp_path):
    """pip install -e . (scikit-build-core): the modules stay in python/specgrad, the library is built into
    site-packages/specgrad, and the package's __path__ holds both; the library is found there."""
    src, site = tmp_path / "src" / "specgrad", tmp_path / "site" / "specgrad"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    site.mkdir(parents=True)
    shutil.copy(Path(sg.lib()._name).resolve(), site / "libspecgrad.so")
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('specgrad', {str(src / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(site)!r}, {str(src)!r}])\n"
            f"mod = importlib.util.module_from_spec(spec); sys.modules['specgrad'] = mod\n"
            f"spec.loader.exec_module(mod)\n"
            f"print(mod.lib()._name)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGRAD_LIB", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(site / "libspecgrad.so")


def test_relative_specgrad_lib_is_the_file_it_names(tmp_path):
    """SPECGRAD_LIB=./libspecgrad.so means that file, not a search of the library path for the name."""
    shutil.copy(Path(sg.lib()._name).resolve(), tmp_path / "libspecgrad.so")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", "import specgrad; print(specgrad.lib()._name)"], cwd=tmp_path,
                       env={**env, "SPECGRAD_LIB": "./libspecgrad.so", "PYTHONPATH": str(PKG.parent)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "libspecgrad.so")


def test_installed_library_found_by_its_soname(tmp_path):
    """After `cmake --install` to a prefix the loader knows (here through LD_LIBRARY_PATH), with no
    library in the package or a build tree, the loader finds libspecgrad.so.MAJOR.MINOR."""
    soname = _lib_module_soname()
    shutil.copytree(PKG, tmp_path / "pkg" / "specgrad", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (tmp_path / "prefix").mkdir()
    shutil.copy(Path(sg.lib()._name).resolve(), tmp_path / "prefix" / soname)
    env = {k: v for k, v in os.environ.items() if k not in ("SPECGRAD_LIB", "PYTHONPATH")}
    # prepended: where the library's own dependencies come from LD_LIBRARY_PATH (gpu-check's bundle), they must
    # still; PATH without gcc / ldconfig: the lookup must not need them (ctypes.util.find_library does)
    ldp = os.pathsep.join(filter(None, [str(tmp_path / "prefix"), os.environ.get("LD_LIBRARY_PATH")]))
    env.update(PYTHONPATH=str(tmp_path / "pkg"), LD_LIBRARY_PATH=ldp, PATH="/nonexistent")
    code = "import specgrad, numpy as np; print(specgrad.lib()._name); print(specgrad.matrix_rank(np.eye(3)))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [soname, "3"]
