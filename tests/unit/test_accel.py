"""relay._accel's detection of a compiled build shadowed by a source tree (files only, no imports)."""

from __future__ import annotations

import importlib.machinery
import io

import relay._accel as accel
from relay._accel import find_shadowed_build

EXTENSION_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _tree(root, *, compiled: bool):
    """A directory holding a relay package, with or without a (fake) compiled _fastpath."""
    package = root / "relay"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_fastpath.pyx").write_text("")
    if compiled:
        (package / f"_fastpath{EXTENSION_SUFFIX}").write_bytes(b"")  # found by name, never loaded
    return package


def test_a_compiled_install_behind_the_source_tree_is_found(tmp_path):
    source = _tree(tmp_path / "checkout", compiled=False)
    installed = _tree(tmp_path / "site-packages", compiled=True)
    found = find_shadowed_build(str(source), [str(source.parent), str(installed.parent)])
    assert found == str(installed / f"_fastpath{EXTENSION_SUFFIX}")


def test_the_current_directory_entry_counts_as_the_source_tree(tmp_path, monkeypatch):
    source = _tree(tmp_path / "checkout", compiled=False)
    installed = _tree(tmp_path / "site-packages", compiled=True)
    monkeypatch.chdir(source.parent)
    assert find_shadowed_build(str(source), ["", str(installed.parent)]) is not None
    assert find_shadowed_build(str(source), [""]) is None


def test_an_uncompiled_install_is_not_a_shadowed_build(tmp_path):
    source = _tree(tmp_path / "checkout", compiled=False)
    installed = _tree(tmp_path / "site-packages", compiled=False)
    assert find_shadowed_build(str(source), [str(source.parent), str(installed.parent)]) is None


def test_only_the_relay_python_would_import_next_counts(tmp_path):
    # The first other relay on the path is the one `relay serve` would run: if it is not compiled,
    # a compiled one further down is not what the user gets either.
    source = _tree(tmp_path / "checkout", compiled=False)
    pure = _tree(tmp_path / "target", compiled=False)
    compiled = _tree(tmp_path / "site-packages", compiled=True)
    entries = [str(source.parent), str(pure.parent), str(compiled.parent)]
    assert find_shadowed_build(str(source), entries) is None


def test_no_other_relay_and_odd_entries_are_no_shadowed_build(tmp_path):
    source = _tree(tmp_path / "checkout", compiled=False)
    entries = [str(source.parent), str(tmp_path / "missing"), str(tmp_path / "not-a-dir.zip")]
    assert find_shadowed_build(str(source), entries) is None


def test_the_checkout_under_test_shadows_nothing():
    # Both runs of scripts/test: compiled in place, or the pure twin chosen with RELAY_PUREPYTHON.
    assert accel.SHADOWED_BUILD is None
    assert accel.shadowed_build_warning() is None
    out = io.StringIO()
    accel.print_shadowed_build_warning(out)
    assert out.getvalue() == ""


def test_the_warning_names_the_build_and_how_to_run_it(monkeypatch):
    monkeypatch.setattr(accel, "SHADOWED_BUILD", "/venv/site-packages/relay/_fastpath.so")
    out = io.StringIO()
    accel.print_shadowed_build_warning(out)
    text = out.getvalue()
    assert len(text.splitlines()) > 3
    assert all(line.startswith("WARNING:") for line in text.splitlines())
    assert "/venv/site-packages/relay/_fastpath.so" in text
    assert "`relay serve`" in text and "`pip install -e .`" in text
