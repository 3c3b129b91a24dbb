"""Every code name the docs cite exists: a rename or a removal must take its docs along.

README.md, docs/*.md and the READMEs of benchmarks/, conformance/ and fuzz/ are scanned for backticked spans that look like relay's code, and each is
resolved:

- a path under one of the repository's directories (``relay/_config.py``, ``tests/...``,
  ``scripts/config_doc.py``, globs such as ``relay/_fp_*.pxi``) or a bare source file name
  (``envelope.py``, ``_fp_frames.pxi``) must exist;
- ``relay.NAME[.ATTR...]`` (call arguments ignored) must be importable and have those attributes;
- ``Class.attr`` where relay defines ``Class``, and ``_module.name`` where ``_module`` is one of
  the repository's modules, must name something defined there (found with ast, so that private
  methods and benchmark modules count without being imported);
- a bare ``_private`` name must be a module or a name defined somewhere in relay;
- ``python -m relay COMMAND --flag ...`` must name a subcommand and its flags.

Anything else (English words, other libraries' names, wire formats) is left alone.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

from relay._cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *(ROOT / d / "README.md" for d in ("benchmarks", "conformance", "fuzz"))]
# Spans that look like relay's code but are not: (doc, span) -> what they are.
NOT_CODE = {
    ("benchmarks/README.md", "relay/X"): "a table column: relay's time over X's",
    ("benchmarks/README.md", "_copy_from_iter"): "a Linux kernel function in a profile",
}
TOP_DIRECTORIES = ("relay", "tests", "scripts", "benchmarks", "docs", "conformance", "fuzz", ".ci")
SOURCE_SUFFIXES = (".py", ".pyx", ".pxi", ".pyi")
CODE_DIRECTORIES = ("relay", "benchmarks", "scripts", "tests", "fuzz")
UNIT_SUFFIXES = {"_s", "_bytes"}  # docs name the suffixes themselves

_SPAN = re.compile(r"`([^`\n]+)`")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"^({_IDENTIFIER}(?:\.{_IDENTIFIER})+)(?:\(.*\))?(?:\s*->.*)?$")
_PRIVATE = re.compile(r"^_[a-z][a-z0-9_]*$")


class Index:
    """What the repository's Python code defines, by module stem and by class name (from ast)."""

    def __init__(self) -> None:
        self.modules: dict[str, set[str]] = {}
        self.classes: dict[str, set[str]] = {}
        self.relay_names: set[str] = set()
        for directory in CODE_DIRECTORIES:
            for path in sorted((ROOT / directory).rglob("*.py")):
                if ".venv" in path.parts:
                    continue
                names = self._read(path)
                self.modules.setdefault(path.stem, set()).update(names)
                if directory == "relay":
                    self.relay_names |= names | {path.stem}
        for path in (ROOT / "relay").glob("*.pyx"):
            self.relay_names.add(path.stem)

    def _read(self, path: Path) -> set[str]:
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in tree.body:
            names |= _bound_names(node)
            if isinstance(node, ast.ClassDef):
                attributes = self.classes.setdefault(node.name, set())
                for item in node.body:
                    attributes |= _bound_names(item)
                for item in ast.walk(node):  # self.x = ... in the methods
                    if isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store) \
                            and isinstance(item.value, ast.Name) and item.value.id == "self":
                        attributes.add(item.attr)
                if path.parts[len(ROOT.parts)] == "relay":
                    self.relay_names |= attributes
        return names


def _bound_names(node: ast.AST) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.If, ast.Try)):
        names = set()
        for child in ast.iter_child_nodes(node):
            names |= _bound_names(child)
        for handler in getattr(node, "handlers", []):
            for child in handler.body:
                names |= _bound_names(child)
        return names
    return set()


@lru_cache(maxsize=1)
def _index() -> Index:
    return Index()


def _path_exists(text: str) -> bool:
    if any(ch in text for ch in "*?["):
        return any(ROOT.glob(text.rstrip("/")))
    return (ROOT / text).exists()


def _looks_like_path(word: str) -> bool:
    return word.split("/")[0] in TOP_DIRECTORIES and "/" in word


def _resolve_relay(dotted: str) -> bool:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def _options(command: str) -> set[str] | None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return set(action.choices[command]._option_string_actions)
    return None


def dead_names(span: str) -> list[str]:
    """The names in one backticked span that look like relay's code and do not exist."""
    index = _index()
    dead = []
    words = span.split()
    if words[:3] == ["python", "-m", "relay"] and len(words) > 3 and not words[3].startswith("-"):
        options = _options(words[3])
        if options is None:
            dead.append(f"python -m relay {words[3]}")
        else:
            dead += [f"python -m relay {words[3]} {w}" for w in words[4:]
                     if w.startswith("--") and w.split("=")[0] not in options]
    for word in words:
        word = word.strip("(),;:")
        if _looks_like_path(word):
            if not _path_exists(word):
                dead.append(word)
        elif word.endswith(SOURCE_SUFFIXES) and "/" not in word and re.fullmatch(r"[\w*.-]+", word):
            if not any(ROOT.rglob(word)):
                dead.append(word)
    if len(words) != 1 or _looks_like_path(span):
        return dead
    match = _DOTTED.match(span)
    if match:
        dotted = match.group(1)
        head, attribute = dotted.split(".")[0], dotted.split(".")[1]
        if head == "relay":
            if not _resolve_relay(dotted):
                dead.append(dotted)
        elif head in index.classes and head[0].isupper():
            if attribute not in index.classes[head]:
                dead.append(dotted)
        elif head.startswith("_") and head in index.modules:
            if attribute not in index.modules[head] and attribute not in index.classes:
                dead.append(dotted)
    elif _PRIVATE.match(span) and span not in UNIT_SUFFIXES and span not in index.relay_names:
        dead.append(span)
    return dead


def test_the_resolver_finds_dead_names():
    assert dead_names("Session._no_such_method") == ["Session._no_such_method"]
    assert dead_names("relay.NoSuchThing(x)") == ["relay.NoSuchThing"]
    assert dead_names("relay/_nowhere.py") == ["relay/_nowhere.py"]
    assert dead_names("python scripts/no_such_script.py --check") == ["scripts/no_such_script.py"]
    assert dead_names("python -m relay serve --no-such-flag 1") == ["python -m relay serve --no-such-flag"]
    assert dead_names("_no_such_helper") == ["_no_such_helper"]
    for alive in ("Session.from_master", "relay.Config.from_toml(\"relay.toml\")", "relay/_fp_*.pxi",
                  "python -m relay serve --max-message-bytes 8388608", "FrameDecoder.payload_buffer",
                  "_publish", "envelope.py", "msgpack.packb", "FrameProtocol.receive_bytes", "_s"):
        assert dead_names(alive) == [], alive


def test_every_code_name_the_docs_cite_exists():
    dead = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for span in _SPAN.findall(line):
                if (str(doc.relative_to(ROOT)), span) in NOT_CODE:
                    continue
                dead += [f"{doc.relative_to(ROOT)}:{number}: {name}" for name in dead_names(span)]
    assert dead == [], "dead names in the docs:\n" + "\n".join(dead)
