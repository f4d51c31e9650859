from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import ensure_secrets_file, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.upper().startswith("FEATURECTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_leave_system_ports_alone() -> None:
    s = load_settings()
    assert (s.pg_port, s.kafka_port, s.connect_port) == (25432, 29092, 28083)
    assert s.bootstrap_servers == "127.0.0.1:29092"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURECTL_KAFKA_PORT", "61000")
    monkeypatch.setenv("FEATURECTL_CONNECT_URL", "http://connect.internal:8083/")
    s = load_settings()
    assert s.bootstrap_servers == "127.0.0.1:61000"
    assert s.connect_rest_url == "http://connect.internal:8083"


def test_unknown_environment_setting_is_rejected_with_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURECTL_KAFKA_PROT", "1")
    with pytest.raises(
        ConfigError, match=r"(?s)unknown setting FEATURECTL_KAFKA_PROT.*FEATURECTL_KAFKA_PORT"
    ):
        load_settings()


def test_unknown_key_in_settings_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "featurectl.env").write_text("FEATURECTL_PG_PORT=6000\nFEATURECTL_CONECT_PORT=1\n")
    with pytest.raises(ConfigError, match=r"(?s)unknown setting.*conect_port.*FEATURECTL_CONNECT_PORT"):
        load_settings()


def test_settings_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "featurectl.env").write_text("FEATURECTL_PG_PORT=6000\n")
    assert load_settings().pg_port == 6000


def test_malformed_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURECTL_PG_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="FEATURECTL_PG_PORT"):
        load_settings()


def test_secrets_come_from_environment_before_secrets_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEATURECTL_DATA_DIR", str(tmp_path))
    generated = ensure_secrets_file(tmp_path / "secrets.env", ("debezium_password",))
    assert load_settings().secret("debezium_password") == generated["debezium_password"]
    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("FEATURECTL_DEBEZIUM_PASSWORD", "from-env")
    assert load_settings().secret("debezium_password") == "from-env"


def test_secrets_file_is_stable_across_calls(tmp_path: Path) -> None:
    first = ensure_secrets_file(tmp_path / "s.env", ("a", "b"))
    assert ensure_secrets_file(tmp_path / "s.env", ("a", "b")) == first


def test_missing_password_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATURECTL_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="FEATURECTL_DEBEZIUM_PASSWORD"):
        load_settings().require_secret("debezium_password")


def secret_files(tmp_path: Path, files: dict[str, str]) -> Path:
    """A directory of secret files as Kubernetes mounts a Secret: each key a symlink into ``..data``."""
    root = tmp_path / "secrets"
    data = root / "..2026_11_27_00_00_00.1"
    data.mkdir(parents=True)
    (root / "..data").symlink_to(data.name)
    for name, value in files.items():
        (data / name).write_text(value)
        (root / name).symlink_to(f"..data/{name}")
    return root


def test_secret_files_are_read_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A container's passwords arrive as files (Compose secrets, Kubernetes Secret volumes), named like the
    variable, in either case; the environment still wins, as it does over the settings file."""
    monkeypatch.setenv("FEATURECTL_DATA_DIR", str(tmp_path))
    root = secret_files(
        tmp_path, {"FEATURECTL_DEBEZIUM_PASSWORD": "from-file", "featurectl_pg_app_password": "app-file"}
    )
    monkeypatch.setenv("FEATURECTL_SECRETS_DIR", str(root))
    settings = load_settings()
    assert settings.secret("debezium_password") == "from-file"
    assert settings.secret("pg_app_password") == "app-file"
    monkeypatch.setenv("FEATURECTL_DEBEZIUM_PASSWORD", "from-env")
    assert load_settings().secret("debezium_password") == "from-env"


def test_a_secret_file_naming_no_setting_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = secret_files(tmp_path, {"FEATURECTL_DEBEZIUM_PASSWRD": "x"})
    monkeypatch.setenv("FEATURECTL_SECRETS_DIR", str(root))
    with pytest.raises(ConfigError, match="FEATURECTL_DEBEZIUM_PASSWRD names no setting") as caught:
        load_settings()
    assert caught.value.fix == "rename it FEATURECTL_DEBEZIUM_PASSWORD"


def test_a_missing_secrets_dir_is_no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The image names /run/secrets/featurectl; a container given no secrets runs on its environment."""
    monkeypatch.setenv("FEATURECTL_SECRETS_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("FEATURECTL_DATA_DIR", str(tmp_path))
    assert load_settings().secret("debezium_password") is None
