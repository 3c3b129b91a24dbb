"""relay ships type information: py.typed, and a stub of the compiled module that matches the pure twin."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import relay._purepath as pure_twin
from relay._fastpath_api import FASTPATH_NAMES

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "relay" / "_fastpath.pyi"

# What the stamped envelope functions return, as the stub spells it.
ENVELOPE_RETURNS = {
    "peek_envelope": "tuple[str, int, int, int]",
    "next_envelope": "tuple[str, int, int, int, int]",
    "envelope_header": "bytes",
    "build_envelope": "bytes",
    "envelope_frame_header": "bytes",
    "sender_tail": "bytes",
}

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
}


def _stub() -> dict:
    """Top-level name -> its ast node in the stub."""
    tree = ast.parse(STUB.read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return {name: node for name, node in names.items() if not name.startswith("_")}


def _stub_parameters(node: ast.FunctionDef, *, method: bool = False) -> list:
    args = node.args
    assert not args.vararg and not args.kwarg, node.name
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + [ast.literal_eval(d) for d in args.defaults]
    result = [(a.arg, "positional", d) for a, d in zip(positional, defaults)]
    result += [(a.arg, "keyword", None if d is None else ast.literal_eval(d))
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return result[1:] if method else result


def _twin_parameters(function) -> list:
    result = []
    for p in inspect.signature(function).parameters.values():
        assert p.kind in _KINDS, (function, p)
        result.append((p.name, _KINDS[p.kind], None if p.default is inspect.Parameter.empty else p.default))
    return result


def test_the_package_ships_py_typed_and_the_stub():
    assert (ROOT / "relay" / "py.typed").exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    data_line = next(line for line in pyproject.splitlines() if line.startswith("relay = ["))
    assert '"py.typed"' in data_line and '"*.pyi"' in data_line


def test_the_stub_declares_every_fastpath_name():
    assert set(_stub()) == set(FASTPATH_NAMES)


def test_the_stub_matches_the_pure_twin():
    stub = _stub()
    for name in FASTPATH_NAMES:
        node, twin = stub[name], getattr(pure_twin, name)
        if isinstance(node, ast.AnnAssign):
            assert ast.literal_eval(node.value) == twin, name
        elif isinstance(node, ast.FunctionDef):
            assert _stub_parameters(node) == _twin_parameters(twin), name
            assert ast.get_docstring(node) == inspect.getdoc(twin), name
            assert node.returns is not None, f"{name} has no return type"
        else:
            assert ast.get_docstring(node) == inspect.getdoc(twin), name
            methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            public = {m for m, v in vars(twin).items() if callable(v) and not m.startswith("_")}
            assert set(methods) == public | {"__init__"}, name
            assert _stub_parameters(methods["__init__"], method=True) == _twin_parameters(twin), name
            for method in public:
                assert _stub_parameters(methods[method], method=True) == _twin_parameters(
                    getattr(twin(), method)), f"{name}.{method}"
                assert ast.get_docstring(methods[method]) == inspect.getdoc(getattr(twin, method)), f"{name}.{method}"


def test_the_stub_has_the_stamped_envelope_api():
    stub = _stub()
    for name, returns in ENVELOPE_RETURNS.items():
        assert ast.unparse(stub[name].returns) == returns, name


def test_every_stub_parameter_is_typed():
    for name, node in _stub().items():
        functions = [node] if isinstance(node, ast.FunctionDef) else [
            m for m in getattr(node, "body", []) if isinstance(m, ast.FunctionDef)]
        for function in functions:
            args = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
            for arg in args:
                assert arg.annotation is not None or arg.arg == "self", f"{name}.{function.name}({arg.arg})"


def _untyped(qualname: str, function) -> list:
    """What ``function`` leaves unannotated: parameters (but self/cls, *args, **kwargs) and the return."""
    signature = inspect.signature(function)
    missing = [f"{qualname}({p.name})" for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append(f"{qualname} -> ?")
    return missing


def test_the_public_surface_is_typed():
    import relay

    stub = _stub()
    untyped = []
    for name in relay.__all__:
        obj = getattr(relay, name)
        if getattr(obj, "__module__", "") == "relay._fastpath":
            assert name in stub, name  # compiled: typed by the stub
            continue
        if not inspect.isclass(obj):
            untyped += _untyped(name, obj)
            continue
        for attribute, value in vars(obj).items():
            if isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            public = not attribute.startswith("_") or attribute in ("__init__", "__call__")
            if public and inspect.isfunction(value):
                untyped += _untyped(f"{name}.{attribute}", value)
    assert untyped == []


def test_the_client_exceptions_are_exported():
    import relay
    from relay import _client

    for name in _client.__all__:
        assert getattr(relay, name) is getattr(_client, name) and name in relay.__all__, name
