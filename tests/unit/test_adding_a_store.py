"""Adding a store touches only its folder: a throwaway store folder, written into a copy of the project,
reaches the stack, the CLI, the settings (and their reference page), the secrets, the errors, the test
platforms and the benches, with nothing outside ``stores/throwaway/`` edited (docs/stores.md, "Adding a store").

The copy holds the project's files as they are (committed or not); the checks run in subprocesses with the copy
first on the path, so the project's own modules stay as they are for the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.ports import free_port

ROOT = Path(__file__).resolve().parents[2]

FOLDER = {
    "__init__.py": '''
        """A throwaway store: only tests/unit/test_adding_a_store.py writes it."""

        from stores.local import LocalService
        from stores.registry import OnlineStoreKind

        KIND = OnlineStoreKind(
            name="throwaway",
            label="Throwaway",
            types={"stores.throwaway.feast.ThrowawayOnlineStore": False},
            sink="stores.throwaway.feast:ThrowawayOnlineStore",
            errors="stores.throwaway.errors:transient",
            probe="stores.throwaway.probe:probe",
            many_hosts=True,
            parallel_writes=True,
            packages=("packaging>=20",),
            local=LocalService(
                name="throwaway",
                server="stores.throwaway.server:ThrowawayServer",
                port="throwaway_port",
                secrets=("throwaway_password",),
            ),
        )
    ''',
    "feast.py": """
        from feast.infra.online_stores.sqlite import SqliteOnlineStore as ThrowawayOnlineStore

        __all__ = ["ThrowawayOnlineStore"]
    """,
    "errors.py": """
        class Unreachable(Exception):
            pass


        def transient(exc: BaseException) -> bool | None:
            return True if isinstance(exc, Unreachable) else None
    """,
    "probe.py": """
        def probe(store: object) -> str:
            return "answering"
    """,
    "settings.py": """
        from pydantic import BaseModel, Field, SecretStr


        class ThrowawaySettings(BaseModel):
            throwaway_port: int = Field(26999, description="Port of the throwaway store's server.")
            throwaway_password: SecretStr | None = Field(
                None, description="Its password.", json_schema_extra={"exported": True}
            )


        SETTINGS = ThrowawaySettings
    """,
    "server.py": '''
        import shutil
        import socket
        import sys

        from core import procs
        from core.settings import Settings, store_settings
        from stores.throwaway.settings import ThrowawaySettings


        class ThrowawayServer:
            """Python's own HTTP server standing in for a store's server."""

            name = "throwaway"

            def __init__(self, settings: Settings) -> None:
                self.settings = settings
                self.port = store_settings(settings, ThrowawaySettings).throwaway_port
                self.home = settings.data_dir / "throwaway"
                self.daemon = procs.Daemon(
                    self.name, self.home / "pid", settings.data_dir / "logs" / "throwaway.log", str(self.home)
                )

            @property
            def address(self) -> str:
                return f"127.0.0.1:{self.port}"

            def ensure_installed(self) -> None:
                pass

            def start(self) -> None:
                if self.pid() is not None:
                    return
                self.home.mkdir(parents=True, exist_ok=True)
                argv = [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(self.home), str(self.port)]
                pid = procs.spawn(self.daemon, argv)
                procs.wait_for(self.ready, 30, "throwaway", check=lambda: procs.died_check(self.daemon, pid))

            def bootstrap(self) -> None:
                pass

            def ready(self) -> bool:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return True
                except OSError:
                    return False

            def pid(self) -> int | None:
                return self.daemon.pid()

            def stop(self) -> bool:
                return procs.stop(self.daemon)

            def wipe(self) -> None:
                shutil.rmtree(self.home, ignore_errors=True)

            def online_store(self, namespace: str) -> str:
                return f"online_store:\\n  type: stores.throwaway.feast.ThrowawayOnlineStore\\n  path: {namespace}.db\\n"

            def empty(self, namespace: str) -> None:
                pass

            def drop(self, namespace: str) -> None:
                pass
    ''',
}

# Run inside the copy: every consumer of the declarations sees the new store.
CHECK = """
import os, sys
from pathlib import Path

data, port = Path(sys.argv[1]), int(sys.argv[2])
from core.settings import ensure_secrets_file, export_store_secrets, load_settings
from stores.registry import classify, kinds, local_services

assert "throwaway" in [k.name for k in kinds()], "the registry"
assert "throwaway" in local_services(), "the local services"
os.environ["FEATURECTL_THROWAWAY_PORT"] = str(port)  # an environment variable of its own, accepted
settings = load_settings(data_dir=data)
assert settings.throwaway_port == port, "the settings"

from stack.launcher import EXTRAS, GENERATED_SECRETS, LocalStack

assert "throwaway" in EXTRAS and "throwaway_password" in GENERATED_SECRETS, "the stack's services and secrets"
ensure_secrets_file(settings.secrets_file, GENERATED_SECRETS)
os.environ.pop("FEATURECTL_THROWAWAY_PASSWORD", None)
export_store_secrets(settings)
assert os.environ["FEATURECTL_THROWAWAY_PASSWORD"], "its password exported for feature_store.yaml"

from stores.throwaway.errors import Unreachable

assert classify(Unreachable()) is True, "its errors told apart"

stack = LocalStack(settings)
assert stack.extras(("throwaway",)) == ["throwaway"]
stack.install(("throwaway",))  # its packages (installed already) and its binaries
stack.service("throwaway").start()
status = {s.name: s for s in stack.status().services}
assert status["throwaway"].state == "RUNNING" and status["throwaway"].address == f"127.0.0.1:{port}", status
assert stack.down(services=("throwaway",)) == ["throwaway"], "stack down stops it"

from featurectl.reference import settings_reference

assert "FEATURECTL_THROWAWAY_PORT" in settings_reference(), "the settings reference"
print("ok")
"""


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (committed or not, as git sees them) in a new folder, plus stores/throwaway/."""
    root = tmp_path_factory.mktemp("adding") / "project"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    folder = root / "stores" / "throwaway"
    folder.mkdir()
    for name, text in FOLDER.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return root


def _run(copy: Path, *argv: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env = {k: v for k, v in env.items() if not k.startswith("FEATURECTL_")}
    done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_the_copy_runs_its_own_modules(copy: Path) -> None:
    out = _run(copy, sys.executable, "-c", "import stores.registry as r; print(r.__file__)")
    assert out.strip() == str(copy / "stores" / "registry.py")


def test_stack_settings_secrets_and_errors_take_the_new_store(copy: Path, tmp_path: Path) -> None:
    assert _run(copy, sys.executable, "-c", CHECK, str(tmp_path / "data"), str(free_port())).strip() == "ok"


def test_the_cli_offers_its_local_server(copy: Path) -> None:
    script = (
        "from click.testing import CliRunner\nfrom featurectl.cli import cli\n"
        "for command in (['stack', 'up'], ['stack', 'install'], ['stack', 'down']):\n"
        "    print(CliRunner().invoke(cli, [*command, '--help']).output)\n"
    )
    out = _run(copy, sys.executable, "-c", script)
    assert out.count("throwaway") >= 3, out


def test_the_test_platforms_and_fixtures_take_it(copy: Path) -> None:
    collected = _run(
        copy, sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
        "tests/integration/test_processor.py",
    )  # fmt: skip
    assert "[throwaway]" in collected, collected[-2000:]
    # The session fixture that starts its local server for tests (tests/conftest.py makes one per store).
    fixture = _run(copy, sys.executable, "-c", "import tests.conftest as c; print(c.local_throwaway.__doc__)")
    assert "Throwaway" in fixture


def test_the_benches_take_it(copy: Path) -> None:
    script = (
        "import runpy, sys\n"
        "for bench in sys.argv[1:]:\n"
        "    sys.argv = [bench, '--help']\n"
        "    try:\n"
        "        runpy.run_path(bench, run_name='__main__')\n"
        "    except SystemExit:\n"
        "        print('end of', bench)\n"
    )
    benches = ("bench/processor_bench.py", "bench/serving_bench.py", "bench/online_store_bench.py")
    out = _run(copy, sys.executable, "-c", script, *benches)
    for bench in benches:
        help_text = out.split(f"end of {bench}")[0]
        assert "throwaway" in help_text, bench
        out = out.split(f"end of {bench}")[1]
