import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
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


def test_a_daemon_spawned_realtime_runs_sched_rr_and_its_forks_and_threads_do_not(tmp_path: Path) -> None:
    """The local Redis is spawned real-time (settings.serving_rt_priority): a lookup never waits behind
    ingest for a core. Its AOF rewrite child and background threads are throughput work: reset on fork."""
    d = procs.Daemon("sleeper", tmp_path / "s.pid", tmp_path / "s.log", marker=str(tmp_path))
    pid = procs.spawn(d, [sys.executable, "-c", f"import time; time.sleep(30)  # {tmp_path}"], rt_priority=1)
    try:
        assert procs.is_realtime(pid)  # CI runs as root (CAP_SYS_NICE)
        assert os.sched_getscheduler(pid) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
        assert os.sched_getparam(pid).sched_priority == 1
    finally:
        assert procs.stop(d, grace_s=5)


def test_without_the_privilege_a_realtime_spawn_runs_normal_and_the_warning_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:  # what an unprivileged user gets (no CAP_SYS_NICE, RLIMIT_RTPRIO 0)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refused)  # the forked child runs this module's os too
    d = procs.Daemon("sleeper", tmp_path / "s.pid", tmp_path / "s.log", marker=str(tmp_path))
    pid = procs.spawn(d, [sys.executable, "-c", f"import time; time.sleep(30)  # {tmp_path}"], rt_priority=1)
    try:
        assert procs.alive(pid) and not procs.is_realtime(pid)
        assert "runs with normal scheduling" in caplog.text
        assert "CAP_SYS_NICE" in caplog.text and "FEATURECTL_SERVING_RT_PRIORITY=0" in caplog.text
        assert procs.make_realtime(1) is False
    finally:
        assert procs.stop(d, grace_s=5)


def test_make_realtime_and_back_to_normal_for_a_running_process() -> None:
    """A model service doing in-process lookups on a shared host makes itself real-time like the server."""
    assert not procs.is_realtime(os.getpid())
    try:
        assert procs.make_realtime(1)
        assert procs.is_realtime(os.getpid())
    finally:
        procs.make_normal()
    assert not procs.is_realtime(os.getpid())


def test_a_daemon_caught_inside_exec_is_still_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after spawn, under load, /proc/PID/cmdline can still be empty (the kernel sets the new image's
    arguments after closing the pipe Popen waits on): seen in CI as a live daemon's pid file "stale"."""
    marker = str(tmp_path / "marker")
    d = procs.Daemon("sleeper", tmp_path / "s.pid", tmp_path / "s.log", marker)
    pid = procs.spawn(d, [sys.executable, "-c", "import time,sys; time.sleep(60)", marker])
    real = psutil.Process.cmdline
    calls = {"n": 0}

    def mid_exec(self: psutil.Process) -> list[str]:
        calls["n"] += 1
        return [] if calls["n"] <= 3 else real(self)

    monkeypatch.setattr(psutil.Process, "cmdline", mid_exec)
    try:
        assert d.pid() == pid and d.pid_file.exists()
    finally:
        monkeypatch.undo()
        assert procs.stop(d, grace_s=10)
