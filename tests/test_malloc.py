"""tcmalloc for training processes (core/malloc.py): which library, how it is preloaded, and that `dynastudio
run` restarts itself with it once, keeping its pid. These tests run without tcmalloc installed: a harmless real
library (libm) stands in for it where a process must really load one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dynastudio.core import malloc
from dynastudio.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _libm() -> str:
    for d in malloc.library_dirs():
        if (d / "libm.so.6").is_file():
            return str(d / "libm.so.6")
    pytest.skip("no libm.so.6 in the usual library folders")


def test_auto_finds_tcmalloc_in_the_library_folders(tmp_path):
    empty, lib = tmp_path / "empty", tmp_path / "lib"
    empty.mkdir()
    lib.mkdir()
    assert malloc.find({}, dirs=[empty]) is None
    (lib / "libtcmalloc_minimal.so.4").write_bytes(b"")
    if sys.platform.startswith("linux"):
        assert malloc.find({}, dirs=[empty, lib]) == str(lib / "libtcmalloc_minimal.so.4")
        assert malloc.find({malloc.ENV: "auto"}, dirs=[lib]) == str(lib / "libtcmalloc_minimal.so.4")
    assert malloc.find({malloc.ENV: "system"}, dirs=[lib]) is None


def test_a_path_is_taken_and_a_wrong_one_refused_in_one_line(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert malloc.find({malloc.ENV: str(lib)}) == str(lib.resolve())
    with pytest.raises(ConfigError) as exc:
        malloc.find({malloc.ENV: str(tmp_path / "nope.so")})
    msg = str(exc.value)
    assert "\n" not in msg and "DYNASTUDIO_MALLOC=" in msg and "'system'" in msg


def test_preload_env_prepends_once_and_quiets_large_allocation_reports():
    env = malloc.preload_env({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}, "/usr/lib/libtcmalloc_minimal.so.4")
    assert env["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4:/opt/other.so"
    assert env[malloc.LARGE_ALLOC_REPORT] == str(1 << 40) and env["PATH"] == "/bin"
    again = malloc.preload_env(env, "/elsewhere/libtcmalloc_minimal.so.4")  # the same library by name: not twice
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert malloc.preload_env({malloc.ENV: "system"}) == {malloc.ENV: "system"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")
def test_reexec_restarts_the_process_once_with_the_library_loaded():
    lib = _libm()
    script = textwrap.dedent(
        f"""
        import os, sys
        from dynastudio.core import malloc
        if "PID_BEFORE" not in os.environ:
            os.environ["PID_BEFORE"] = str(os.getpid())
            malloc.reexec([sys.executable, "-c", sys.argv[1], sys.argv[1]])
            print("not restarted")
        else:
            malloc.reexec([sys.executable, "-c", "print('restarted twice')"])  # preloaded now: a no-op
            maps = open("/proc/self/maps").read()
            print(os.environ["PID_BEFORE"] == str(os.getpid()), os.environ["LD_PRELOAD"], {lib!r} in maps)
        """
    )
    env = {**os.environ, malloc.ENV: lib}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", script, script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", lib, "True"]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dynastudio.core.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)


def test_run_applies_the_setting_and_other_commands_do_not(tmp_path):
    env = {**os.environ, malloc.ENV: str(tmp_path / "missing.so")}
    run = _cli("run", str(tmp_path / "p"), env=env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {malloc.ENV}={tmp_path / 'missing.so'}: no such file; set it to the path of a malloc library "
        "(such as libtcmalloc_minimal.so.4), to 'auto' or to 'system'"
    ]
    status = _cli("status", str(tmp_path / "p"), env=env)
    assert malloc.ENV not in status.stderr
