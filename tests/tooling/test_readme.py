"""The README's first lines and its embedding example are true: the example runs as printed."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_lines_are_the_two_setup_commands():
    first, second = README.splitlines()[:2]
    assert first.split("#")[0].strip() == "pip install . && relay serve"
    assert second.split("#")[0].strip() == "scripts/test"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "python -m relay serve" in README  # SPEC 2: the module entry point stays documented


def test_embedding_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python example"
    example = blocks[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("created ")
    assert lines[-1] == "snapshot 2 <html>...</html>", lines
