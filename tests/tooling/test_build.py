"""The build and the switch: relay works with or without its compiled fast path.

Builds run on a copy of the source tree in a temporary directory (never in the checkout, which
other runs may be using), with --no-build-isolation so that they are quick and need no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from cassandra.metadata import murmur3 as driver_murmur3

import relay._purepath as purepath

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# An ASCII key (the driver and Cassandra agree only without tail bytes >= 0x80), 19 bytes long so
# that both the 16-byte block loop and the tail are exercised.
TOKEN_KEY = b"session-0123456789a"
BUILD_TIMEOUT_SECONDS = 120


def _environment(**settings: str) -> dict[str, str]:
    """This interpreter's environment without the relay switches, plus ``settings``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RELAY_PUREPYTHON", "RELAY_EXPECT_FASTPATH", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(settings)
    return env


def _run(args, *, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
    )


def _source_copy(tmp_path: Path) -> Path:
    """The checkout's packaging files and relay/ without any compiled extension."""
    source = tmp_path / "source"
    source.mkdir()
    for item in REPO.iterdir():
        if item.is_file():
            shutil.copy2(item, source / item.name)
    # relay/_fastpath.c is kept (with its time stamp) so that cythonize can skip an up-to-date file.
    shutil.copytree(REPO / "relay", source / "relay",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return source


def _compiled_twins(package_dir: Path) -> list[Path]:
    return sorted(package_dir.glob("_fastpath*.so")) + sorted(package_dir.glob("_fastpath*.pyd"))


def _venv_site_packages() -> list[str]:
    """The site-packages directories of the running interpreter (the venv pytest runs in)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _probe_switch(*, cwd: Path, env: dict[str, str], isolated: bool = False) -> dict:
    """Import relay._accel in a fresh interpreter and say what it picked.

    ``isolated``: keep this venv's site-packages (relay's dependencies) but skip their .pth hooks
    (``python -S``), so that an editable install of the checkout cannot supply relay modules missing
    from the copy on PYTHONPATH.  The directories are computed here, in the venv: without ``site``
    the child's ``sys.prefix`` is the base interpreter's, whose site-packages lack the dependencies.
    """
    code = (
        "import sys\n"
        "sys.path += %r if sys.flags.no_site else []\n" % _venv_site_packages() +
        "import json, relay._accel as accel\n"
        "twin = sys.modules[accel.murmur3_token.__module__]\n"
        "print(json.dumps({'file': accel.__file__, 'active': accel.FASTPATH_ACTIVE,\n"
        "  'twin': twin.__name__, 'twin_file': twin.__file__,\n"
        "  'token': accel.murmur3_token(%r)}))\n" % (TOKEN_KEY,)
    )
    flags = ["-S"] if isolated else []
    proc = _run([sys.executable, *flags, "-c", code], cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_pure_python_build_has_no_extension_and_works(tmp_path):
    source = _source_copy(tmp_path)
    target = tmp_path / "site"
    proc = _run(
        [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation",
         "--target", target, source],
        cwd=tmp_path, env=_environment(RELAY_PUREPYTHON="1"),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "relay build: RELAY_PUREPYTHON is set" in output
    assert _compiled_twins(target / "relay") == []
    shipped = {p.name for p in (target / "relay" / "_purepath").glob("*.py")}
    assert shipped == {p.name for p in (REPO / "relay" / "_purepath").glob("*.py")}
    # Type information ships too (PEP 561), with the stub that stands in for the compiled module.
    assert (target / "relay" / "py.typed").is_file() and (target / "relay" / "_fastpath.pyi").is_file()

    # Without RELAY_PUREPYTHON at run time: the missing extension alone selects the pure twin.
    probe = _probe_switch(cwd=tmp_path, env=_environment(PYTHONPATH=str(target)), isolated=True)
    assert Path(probe["file"]).is_relative_to(target)
    assert Path(probe["twin_file"]).is_relative_to(target)
    assert probe["active"] is False
    assert probe["twin"].startswith("relay._purepath")
    assert probe["token"] == driver_murmur3(TOKEN_KEY)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_purepython_at_run_time_forces_the_pure_twin(value):
    import relay._fastpath  # noqa: F401  (the choice below must be the switch's, not a fallback)

    probe = _probe_switch(cwd=REPO, env=_environment(RELAY_PUREPYTHON=value))
    assert probe["active"] is False
    assert probe["twin"].startswith("relay._purepath")
    assert probe["token"] == driver_murmur3(TOKEN_KEY)


@pytest.mark.parametrize("value", [None, "", "0"])
def test_fast_path_is_used_when_built_and_not_disabled(value):
    settings = {} if value is None else {"RELAY_PUREPYTHON": value}
    probe = _probe_switch(cwd=REPO, env=_environment(**settings))
    assert probe["active"] is True
    assert probe["twin"] == "relay._fastpath"
    assert probe["token"] == driver_murmur3(TOKEN_KEY)


def test_both_twins_export_exactly_the_same_names():
    import relay._fastpath as fastpath

    assert len(set(purepath.__all__)) == len(purepath.__all__)
    assert sorted(fastpath.__all__) == sorted(purepath.__all__)
    for name in purepath.__all__:
        pure, fast = getattr(purepath, name), getattr(fastpath, name)
        assert isinstance(pure, type) == isinstance(fast, type), name
        assert callable(pure) == callable(fast), name
        if not callable(pure):
            assert type(pure) is type(fast) and pure == fast, name


def test_switch_exports_the_active_twin_exactly():
    import relay._accel as accel

    twin = sys.modules["relay._fastpath" if accel.FASTPATH_ACTIVE else "relay._purepath"]
    assert sorted(accel.__all__) == sorted(twin.__all__)
    for name in twin.__all__:
        assert getattr(accel, name) is getattr(twin, name), name


def test_build_without_a_compiler_falls_back_and_says_so(tmp_path):
    source = _source_copy(tmp_path)
    proc = _run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=source, env=_environment(CC=str(tmp_path / "no-such-cc")),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "relay build: could not compile relay._fastpath" in output
    assert _compiled_twins(source / "relay") == []


def test_build_without_cython_falls_back_and_says_so(tmp_path):
    source = _source_copy(tmp_path)
    # A Cython that cannot be imported, shadowing the installed one.
    blocker = tmp_path / "no-cython" / "Cython"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('Cython hidden by test_build')\n")
    proc = _run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=source, env=_environment(PYTHONPATH=str(blocker.parent)),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "relay build: Cython is not available" in output
    assert _compiled_twins(source / "relay") == []
