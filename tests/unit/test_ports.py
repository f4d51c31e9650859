"""Ports for throwaway servers: never one another process can be handed before the server binds it."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import pytest

from core import ports
from core.ports import free_port


def _ephemeral() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def _pick(count: int, out: multiprocessing.Queue, done: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    out.put([free_port() for _ in range(count)])
    done.wait(60)  # hold the reservations until the parent has every process's ports


def test_processes_picking_at_once_get_distinct_ports_outside_the_ephemeral_range() -> None:
    ctx = multiprocessing.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    pickers = [ctx.Process(target=_pick, args=(50, out, done)) for _ in range(4)]
    for p in pickers:
        p.start()
    try:
        picked = [port for _ in pickers for port in out.get(timeout=60)] + [free_port() for _ in range(50)]
    finally:
        done.set()
        for p in pickers:
            p.join(30)
    assert len(set(picked)) == len(picked) == 250
    assert not set(picked) & set(_ephemeral())  # bind(0) and outgoing connections cannot take them
    assert all(ports.LOW <= port < ports.HIGH for port in picked)


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        taken = s.getsockname()[1]
        os.close(ports._held.pop(taken))  # as if another program, not a caller of free_port, held it
        monkeypatch.setattr(ports.random, "randrange", lambda low, high: taken)  # the first port tried
        assert free_port() != taken
