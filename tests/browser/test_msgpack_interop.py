"""client.js's own msgpack codec differentially tested against @msgpack/msgpack (npm) under Node.

Both directions: what client.js encodes, @msgpack/msgpack (and client.js) read back as the value it
was given; what @msgpack/msgpack encodes, client.js reads as @msgpack/msgpack does; plus encodings
neither encoder writes (float32, non-minimal ints and lengths).  Edge values and seeded random ones
(tests/browser/msgpack_diff.js).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.node

HERE = Path(__file__).resolve().parent
CLIENT_JS = HERE.parents[1] / "relay" / "static" / "client.js"
RANDOM_CASES = 1000
NODE_TIMEOUT_S = 120


@pytest.mark.parametrize("seed", [1, 4242424242])
def test_client_js_and_msgpack_msgpack_agree(node_modules, seed):
    node = shutil.which("node")
    assert node, "Node.js is required (these tests must not be skipped)"
    result = subprocess.run([node, str(HERE / "msgpack_diff.js"), str(CLIENT_JS), str(node_modules), str(seed),
                             str(RANDOM_CASES)], capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mismatches"] == []
    assert report["cases"] > RANDOM_CASES
    # Most values are also written byte for byte alike (the rest: integers past 32 bits, which
    # @msgpack/msgpack writes as float64, and -0, which it writes as the integer 0).
    assert report["byteEqual"] > report["cases"] // 2
