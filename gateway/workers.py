"""`capmesh gateway --workers N`: N gateway processes serving one gRPC port and one HTTP port.

One Python process tops out near 1.6k proxied calls/s (issue 20), so several processes share the
ports: each binds them with SO_REUSEPORT and the kernel spreads new connections across them (a
channel's calls all go to the worker it connected to). The workers share what must be shared
through Redis, as separate gateways on one Redis do: registrations (announced on pub/sub, so a
backend registered with one worker is routable from every worker, and WatchCapabilities and xDS
on any worker follow it), jobs (leases: one runner at a time per job), file descriptions, and
quotas; file bytes go to the one files folder on this machine. Hence `workers` > 1 needs
`redis_url` (GatewaySettings refuses the settings otherwise).

This process, the supervisor, serves nothing itself. It
- reserves both ports first (bound with SO_REUSEPORT, never listening, so the kernel hands it no
  connection), which turns port 0 into one real port that every worker then binds;
- prints the one "capmesh gateway listening on ..." line once every worker serves;
- restarts a worker that exits after it has served (a crash must not shrink the gateway), after the
  backoff `capmesh up` uses for its processes (services/runtime/restarts.py: 0.5 s, doubling), and
  stops everything, exiting non-zero, when one worker crash-loops; a worker's first start that
  fails before serving stops everything at once (its error, a bad keys file or an unreachable
  Redis, is one that a restart would only repeat), while a restarted one that fails so counts as
  one more crash;
- on SIGTERM or SIGINT passes SIGTERM to every worker, each stopping gracefully as a single
  gateway does, and exits 0 once all have (SIGKILL for any still running after the grace period);
  SIGHUP (reload the keys file) goes to every serving worker.
Workers die with the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans.
Their metrics go to one temporary folder of the supervisor's, so that /metrics on any worker
reports the whole gateway (gateway/metrics.py).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.main import listening_line, run_event_loop, serve
from capmesh.gateway.server.metrics import MULTIPROCESS_DIR_ENV
from capmesh.gateway.server.sockets import bound_tcp_socket
from capmesh.services.runtime.restarts import CrashHistory

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_MARGIN_S = 5.0  # past the grace period, for a worker's own shutdown steps, before SIGKILL


def _die_with_parent() -> None:
    """SIGTERM this worker when the supervisor dies, however it dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():  # it died before the line above took effect
        sys.exit(1)


def _worker(settings: GatewaySettings, ready: Connection) -> None:
    """A worker process: one gateway; tells the supervisor its addresses once it serves."""
    _die_with_parent()
    from redis.exceptions import RedisError

    from capmesh.services.runtime.errors import CapmeshError
    from capmesh.services.runtime.settings import SettingsError

    def on_ready(running: Any) -> None:
        ready.send((running.grpc_address, running.http_url))

    try:
        run_event_loop(settings, serve(settings, on_ready))
    except KeyboardInterrupt:
        sys.exit(130)
    except (CapmeshError, OSError, RedisError, SettingsError) as exc:  # as `capmesh gateway` reports them
        print(f"capmesh gateway: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing.Process (spawn context)
    ready: Connection  # the supervisor's end: one message once the worker serves
    serving: bool = False
    restarted: bool = False  # started again after a crash: failing before serving is one more crash


class _Supervisor:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        # spawn, not fork: a fresh interpreter per worker, with no gRPC or event-loop state copied
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False

    def _worker_settings(self, index: int) -> GatewaySettings:
        # An instance id set by hand names the gateway; each worker needs its own (job runner owners).
        # The default (host:port:pid) already differs per process.
        instance_id = f"{self._settings.instance_id}/w{index}" if self._settings.instance_id else ""
        return replace(self._settings, instance_id=instance_id)

    def _start(self, index: int, restarted: bool = False) -> _Worker:
        theirs, ours = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker, args=(self._worker_settings(index), ours), name=f"capmesh-gateway-{index}", daemon=False
        )
        process.start()
        ours.close()  # only the worker writes; its end closing tells us it is gone
        return _Worker(index, process, theirs, restarted=restarted)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._wake_write.send(b"x")

    def _on_hangup(self, signum: int, frame: object) -> None:
        # SIGHUP reloads the keys file (gateway/auth/keys.py) in each worker; only serving ones have
        # that handler, the others read the file as they start anyway
        for worker in self._workers:
            if worker.serving and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGHUP)

    def _stop_all(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        for worker in self._workers:
            worker.process.join(self._settings.grace_period_s + STOP_MARGIN_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.ready.close()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self._settings.keys_file:  # without one, SIGHUP ends the gateway, as it ends a single one
            signal.signal(signal.SIGHUP, self._on_hangup)
        self._workers = [self._start(index) for index in range(self._settings.workers)]
        crashes = [CrashHistory() for _ in self._workers]
        restart_at: dict[int, float] = {}  # worker index -> when it starts again (time.monotonic())
        announced = False
        try:
            while not self._stopping:
                waiting: list[Any] = [self._wake_read]
                for index, worker in enumerate(self._workers):
                    if index not in restart_at:
                        waiting.append(worker.process.sentinel)
                        if not worker.serving:
                            waiting.append(worker.ready)
                timeout = max(0.0, min(restart_at.values()) - time.monotonic()) if restart_at else None
                done = wait(waiting, timeout)
                for index, due in list(restart_at.items()):
                    if due <= time.monotonic() and not self._stopping:
                        del restart_at[index]
                        self._workers[index] = self._start(index, restarted=True)
                for i, worker in enumerate(self._workers):
                    if i in restart_at:
                        continue
                    exited = worker.process.sentinel in done
                    if not worker.serving and worker.ready in done:
                        try:
                            grpc_address, http_url = worker.ready.recv()
                        except EOFError:  # its end closed: it is exiting before it served
                            worker.process.join()
                            exited = True
                        else:
                            worker.serving = True
                            if not announced and all(w.serving for w in self._workers):
                                announced = True
                                print(listening_line(grpc_address, http_url), flush=True)
                    if exited:
                        # its in-flight and queue gauges no longer count (`live*` modes)
                        mark_process_dead(worker.process.pid, os.environ[MULTIPROCESS_DIR_ENV])
                    if not exited or self._stopping:
                        continue
                    code = worker.process.exitcode
                    worker.ready.close()
                    if not worker.serving and not worker.restarted:
                        _say(f"worker {worker.index} exited with {code} before serving; stopping")
                        return code if code is not None and code > 0 else 1  # < 0: killed by a signal
                    delay = crashes[i].exited()
                    if delay is None:
                        _say(f"{crashes[i].crash_loop(f'worker {worker.index}', code)}; stopping")
                        return 1
                    _say(f"worker {worker.index} exited with {code}; starting it again in {delay:.1f}s")
                    restart_at[i] = time.monotonic() + delay
            return 0
        finally:
            self._stop_all()


def _say(line: str) -> None:
    print(f"capmesh gateway: {line}", file=sys.stderr, flush=True)


def supervise(settings: GatewaySettings) -> int:
    """Runs `settings.workers` gateway processes on shared ports until SIGTERM/SIGINT; the exit code."""
    # Both ports are bound here and held, never listening (so the kernel hands this process no
    # connection): port 0 becomes one real port that every worker then binds.
    grpc_socket = bound_tcp_socket(settings.host, settings.port, reuse_port=True)
    http_socket = bound_tcp_socket(settings.host, settings.http_port, reuse_port=True)
    # The workers' metrics folder; spawned workers inherit the variable and read it as they import
    # prometheus_client. This process records nothing, so its own mode does not matter.
    metrics_dir = tempfile.mkdtemp(prefix="capmesh-gateway-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
    try:
        ports = replace(settings, port=grpc_socket.getsockname()[1], http_port=http_socket.getsockname()[1])
        return _Supervisor(ports).run()
    finally:
        grpc_socket.close()
        http_socket.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
