"""The docs stay true to the code: every setting is documented with its real default."""

from pathlib import Path

from relay._cli import SETTING_HELP
from relay._config import Config

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_every_setting_with_its_flag():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for name in Config.setting_names():
        assert f"| `{name}` | `--{name.replace('_', '-')}` |" in doc, name
        assert name in SETTING_HELP, name


def test_docs_named_in_the_readme_exist():
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/architecture.md", "docs/protocol.md", "docs/configuration.md", "benchmarks/README.md"):
        assert doc in readme and (ROOT / doc).exists(), doc
