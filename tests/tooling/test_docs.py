"""The docs stay true to the code: every setting is documented with its real default."""

import dataclasses
from pathlib import Path

import config_doc
from relay._config import NO_FLAG, Config

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_every_setting_with_its_flag():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    unflagged = {f.name for f in dataclasses.fields(Config) if f.metadata.get(NO_FLAG)}
    for name in Config.setting_names():
        flag = "none (file or environment)" if name in unflagged else f"`--{name.replace('_', '-')}`"
        assert f"| `{name}` | {flag} |" in doc, name
    for name in Config.hook_names():
        assert f"| `{name}` |" in doc, name


def test_configuration_doc_tables_are_the_generated_ones():
    doc = config_doc.DOC.read_text()
    assert config_doc.render(doc) == doc, "docs/configuration.md is out of date: run python scripts/config_doc.py"
    assert config_doc.main(["--check"]) == 0


def test_docs_named_in_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/architecture.md", "docs/protocol.md", "docs/configuration.md", "benchmarks/README.md"):
        assert doc in readme and (ROOT / doc).exists(), doc


def test_no_file_carries_merge_conflict_markers():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    marked = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".so", ".json"):
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        marked += [f"{name}:{i}" for i, line in enumerate(lines, 1)
                   if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="]
    assert marked == []
