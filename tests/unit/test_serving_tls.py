"""`featurectl serve` over TLS: with a key and certificate (from a certificate authority made at test time), it
answers HTTPS to a client that trusts that authority, refuses a client that does not, and plain HTTP gets no
answer; a half TLS configuration or a missing file is refused before anything starts, naming the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
import trustme
from click.testing import CliRunner
from feast import FeatureStore

from core.errors import FeatureCtlError
from core.ports import free_port
from serving.feature_server import FeatureServer

LOOKUP = {"features": ["customer_profile:segment"], "entities": {"customer_id": [1]}}


def test_the_feature_server_answers_https_to_clients_that_trust_its_authority(
    sqlite_store: FeatureStore, tmp_path: Path
) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    key, cert, ca = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "ca.pem"
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    authority.cert_pem.write_to_path(str(ca))
    server = FeatureServer(
        Path(str(sqlite_store.repo_path)),
        "127.0.0.1",
        free_port(),
        log=tmp_path / "serve.log",
        workers=2,
        tls=(key, cert),
    )
    server.start()
    try:
        assert server.url.startswith("https://")
        answer = requests.post(f"{server.url}/get-online-features", json=LOOKUP, verify=str(ca), timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["metadata"]["feature_names"] == ["customer_id", "segment"]
        with pytest.raises(requests.exceptions.SSLError):  # the system's authorities do not vouch for it
            requests.post(f"{server.url}/get-online-features", json=LOOKUP, timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP beside it
            requests.post(
                server.url.replace("https://", "http://") + "/get-online-features", json=LOOKUP, timeout=10
            )
    finally:
        server.stop()


def test_a_missing_certificate_file_is_refused_by_name(sqlite_store: FeatureStore, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not used")
    server = FeatureServer(
        Path(str(sqlite_store.repo_path)), "127.0.0.1", free_port(), tls=(key, tmp_path / "nope.pem")
    )
    with pytest.raises(FeatureCtlError, match=r"TLS certificate .*nope\.pem does not exist"):
        server.start()
    assert not server.procs


def test_half_a_tls_configuration_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from featurectl.cli import cli

    monkeypatch.setenv("FEATURECTL_SERVE_TLS_KEY", str(tmp_path / "key.pem"))
    # The CLI exports the stores' passwords of its settings (the clone's, not the test stores'): restored
    # after the test, or a store fixture started later in this session bootstraps with the wrong password.
    monkeypatch.setattr(os, "environ", os.environ.copy())
    result = CliRunner().invoke(cli, ["serve"])
    assert isinstance(result.exception, FeatureCtlError)  # featurectl's main prints it with its fix, exit 1
    assert "only FEATURECTL_SERVE_TLS_KEY is set" in str(result.exception)
    assert "set both FEATURECTL_SERVE_TLS_KEY and FEATURECTL_SERVE_TLS_CERT" in str(result.exception)
