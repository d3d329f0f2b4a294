"""A throwaway certificate authority for wss runs (`--tls`): made with openssl
in the run's temp dir, the same way the tests make theirs: an EC P-256 CA and a
server certificate it signs for `localhost` and 127.0.0.1. The gateway serves
the server certificate (`[tls]`), the load generator verifies it against the CA
(`--ca`) and the driver's own https requests do the same."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
SERVER_EXT = ("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
              "extendedKeyUsage=serverAuth\n")


@dataclass
class TestCa:
    """PEM files: the CA certificate, the server certificate and its key."""
    ca: Path
    cert: Path
    key: Path

    def overlay(self) -> str:
        """The `[tls]` table that serves the server certificate."""
        return f'\n[tls]\ncert = "{self.cert}"\nkey = "{self.key}"\n'

    def context(self) -> ssl.SSLContext:
        """An SSL context that verifies the gateway against this CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(directory: Path, args: list[str]) -> None:
    out = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{out.stderr}")


def make_ca(tmp: Path) -> TestCa:
    """A new CA and server certificate in `tmp`/tls (valid for 2 days)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("--tls needs `openssl` on PATH (Debian: apt-get install openssl)")
    d = tmp / "tls"
    d.mkdir(exist_ok=True)
    _openssl(d, ["req", "-x509", "-days", "2", "-subj", "/CN=ticker-bench CA", *EC,
                 "-keyout", "ca.key", "-out", "ca.pem"])
    _openssl(d, ["req", "-subj", "/CN=localhost", *EC,
                 "-keyout", "server.key", "-out", "server.csr"])
    (d / "ext.cnf").write_text(SERVER_EXT)
    _openssl(d, ["x509", "-req", "-days", "2", "-in", "server.csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "ext.cnf",
                 "-out", "server.pem"])
    return TestCa(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")
