"""A test CA and certificates signed by it, made with the ``openssl`` command in a folder of the test's.

    ca = TestCA(tmp_path)
    node = ca.issue("node-1")          # .cert, .key: PEM files; serverAuth and clientAuth, SAN 127.0.0.1
    context = ca.client_context()      # an ssl.SSLContext that trusts the CA

Certificates are ECDSA P-256, valid for two days, with subjectAltName ``DNS:localhost, IP:127.0.0.1,
IP:::1`` unless told otherwise.  ``spki_hash`` gives what Chromium's
``--ignore-certificate-errors-spki-list`` wants: it trusts that one key, not every certificate.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["TestCA", "Issued", "OPENSSL", "spki_hash"]

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
VALID_DAYS = "2"
DEFAULT_NAMES = "DNS:localhost,IP:127.0.0.1,IP:::1"
OPENSSL_TIMEOUT_S = 30


def _run(*args: str, input_bytes: Optional[bytes] = None) -> bytes:
    result = subprocess.run([OPENSSL, *args], input=input_bytes, capture_output=True, timeout=OPENSSL_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


@dataclass(frozen=True)
class Issued:
    name: str
    cert: str
    key: str


def spki_hash(cert_file: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, as Chromium's SPKI allowlist takes it."""
    public_pem = _run("x509", "-in", cert_file, "-pubkey", "-noout")
    der = _run("pkey", "-pubin", "-outform", "der", input_bytes=public_pem)
    digest = _run("dgst", "-sha256", "-binary", input_bytes=der)
    import base64

    return base64.b64encode(digest).decode()


class TestCA:
    __test__ = False  # not a pytest test class

    def __init__(self, directory, name: str = "relay test CA") -> None:
        if not os.path.exists(OPENSSL):
            raise RuntimeError("the openssl command is missing: apt-get install openssl")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert = str(self.directory / "ca.crt")
        self.key = str(self.directory / "ca.key")
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", self.key, "-out", self.cert, "-days", VALID_DAYS, "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, *, names: str = DEFAULT_NAMES) -> Issued:
        """A certificate for ``name`` (its CN) signed by this CA, usable by a server and a client."""
        cert = str(self.directory / f"{name}.crt")
        key = str(self.directory / f"{name}.key")
        csr = str(self.directory / f"{name}.csr")
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
                              "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
        _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
             "-out", csr, "-subj", f"/CN={name}")
        _run("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial", "-out", cert,
             "-days", VALID_DAYS, "-extfile", str(extensions))
        return Issued(name, cert, key)

    def client_context(self, client: Optional[Issued] = None) -> ssl.SSLContext:
        """A client context that trusts only this CA (and presents ``client``'s certificate)."""
        context = ssl.create_default_context(cafile=self.cert)
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context
