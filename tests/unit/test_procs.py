import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import procs
from core.errors import FeatureCtlError


def test_stale_pid_file_is_detected_and_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(f"{dead.pid}\n")
    d = procs.Daemon("kafka", pid_file, tmp_path / "k.log", marker=str(tmp_path / "server.properties"))
    assert d.pid() is None
    assert not pid_file.exists()


def test_recycled_pid_of_another_program_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest is not Kafka
    d = procs.Daemon("kafka", pid_file, tmp_path / "k.log", marker=str(tmp_path / "server.properties"))
    assert d.pid() is None


def test_port_in_use_names_port_process_and_setting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(
            FeatureCtlError,
            match=rf"(?s)port {port} is already in use by pid {os.getpid()}.*FEATURECTL_PG_PORT",
        ):
            procs.ensure_port_free(port, "postgres", "FEATURECTL_PG_PORT")


def test_spawn_and_stop_gracefully(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    d = procs.Daemon("sleeper", tmp_path / "s.pid", tmp_path / "s.log", marker)
    pid = procs.spawn(d, [sys.executable, "-c", "import time,sys; time.sleep(60)", marker])
    assert d.pid() == pid
    assert procs.stop(d, grace_s=10)
    assert not procs.alive(pid) and d.pid() is None
    assert procs.stop(d) is False


def test_wait_for_times_out_with_the_reason() -> None:
    with pytest.raises(FeatureCtlError, match="waiting for the moon"):
        procs.wait_for(lambda: False, 0.3, "the moon", interval_s=0.05)


def test_kafka_cluster_ids_never_start_with_a_dash_which_the_storage_tool_reads_as_an_option() -> None:
    import base64

    from stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]  # a random id starts with "-" 1 time in 64
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_a_daemon_spawned_nice_runs_behind_the_callers_session(tmp_path: Path) -> None:
    """Kafka Connect is spawned nice (settings.connect_nice): its threads and its session's autogroup (what
    Linux weighs between sessions) both yield the CPU to `featurectl serve` on a shared host."""
    d = procs.Daemon("sleeper", tmp_path / "s.pid", tmp_path / "s.log", marker=str(tmp_path))
    pid = procs.spawn(d, [sys.executable, "-c", f"import time; time.sleep(30)  # {tmp_path}"], nice=7)
    try:
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7
        if Path("/proc/self/autogroup").exists():
            assert Path(f"/proc/{pid}/autogroup").read_text().rstrip().endswith("nice 7")
    finally:
        assert procs.stop(d, grace_s=5)
