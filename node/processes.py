"""Several node processes serving one address (``[node] processes``, PostgreSQL).

A node process spends its one event loop on a core; a consortium hub on a
bigger machine runs several. Each is an ordinary node (``ill-node serve
--member K``): its own writer, outbox worker and timers on the shared database,
which already make many processes safe (row locks, ``SKIP LOCKED`` claims, the
digests that make a message received twice change nothing). Their listening
sockets share the port (SO_REUSEPORT), so the kernel spreads new connections
over them.

The parent serves nothing. It checks that the address is free (SO_REUSEPORT
would otherwise let a second copy of the node join the first's port silently),
starts the first process, and the others once the first is serving (so a
database not migrated, or unreachable, is reported once), then supervises:

- SIGHUP: the configuration is read again and, if valid, every process reloads
  it. A process reloaded through the admin API asks the parent for the same.
- SIGTERM or SIGINT: every process stops as a lone node does (its batch written,
  its sends recorded), then the parent exits.
- SIGUSR2: a rolling restart, for an upgrade: each process in turn is replaced by
  a new one (the code and configuration on disk now), started first, so the port
  is always served. If a new process cannot start, the restart stops there and
  the others serve on as they were.
- A process that exits on its own is started again, after a delay that doubles
  while it keeps failing soon after its start.

A member whose parent has gone (even by SIGKILL) sees end of file on its stdin,
a pipe from the parent, and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("node.processes")

# What a member writes to its parent, on its stdout: it serves; it has reloaded
# through the admin API, and the others should too.
READY, RELOAD = b"ready\n", b"reload\n"

# Linux 5.14+: whether the connections queued on a listener that closes go to another
# listener of its SO_REUSEPORT group, rather than being reset.
MIGRATE_REQUESTS = "/proc/sys/net/ipv4/tcp_migrate_req"


@dataclass(frozen=True)
class Member:
    """This process's place among the node's processes."""

    index: int

    def reload_others(self) -> None:
        """Ask the parent to reload the other processes (the admin API reloaded ours)."""
        try:
            os.write(sys.stdout.fileno(), RELOAD)
        except BrokenPipeError:  # the parent has gone; so shall we (stdin at end of file)
            pass

    def started(self, stop: asyncio.Event) -> None:
        """Serving: tell the parent, and stop when it has gone (stdin at end of file)."""
        try:
            os.write(sys.stdout.fileno(), READY)
        except BrokenPipeError:  # gone already
            stop.set()
            return
        loop = asyncio.get_running_loop()
        stdin = sys.stdin.fileno()

        def readable() -> None:
            if not os.read(stdin, 4096):
                loop.remove_reader(stdin)
                log.warning("the parent process has gone: stopping")
                stop.set()

        loop.add_reader(stdin, readable)


def port_in_use(host: str, port: int) -> OSError | None:
    """Whether another process listens on the address, SO_REUSEPORT or not: a socket
    without the option cannot bind next to any listener."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


class Supervisor:
    """Starts ``count`` members of ``ill-node serve --config PATH`` and keeps them up."""

    def __init__(self, config_path: Path, count: int, *, start_timeout: float = 120.0,
                 restart_delay: float = 1.0, max_restart_delay: float = 60.0,
                 stop_timeout: float = 30.0) -> None:
        self.config_path = config_path
        self.count = count
        self.start_timeout = start_timeout
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stop_timeout = stop_timeout
        # Each member's serving process; and every process started and not yet gone.
        self.members: dict[int, asyncio.subprocess.Process] = {}
        self.children: set[asyncio.subprocess.Process] = set()
        # Members past READY: SIGHUP's default action, before a member's handler is
        # installed, would end it. A process starting at a reload (a member's first, or
        # a replacement) is signalled once it serves.
        self.serving: set[int] = set()
        self.starting: set[int] = set()
        self.reload_pending: set[int] = set()
        self.stopping = asyncio.Event()
        self.rolling: asyncio.Task | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR2, self.restart)
        try:
            if not await self._start(0) or not all(
                    await asyncio.gather(*(self._start(k) for k in range(1, self.count)))):
                return 0 if self.stopping.is_set() else 1
            log.info("serving with %d processes (pids %s)", self.count,
                     " ".join(str(p.pid) for _, p in sorted(self.members.items())))
            keepers = [asyncio.create_task(self._keep(k)) for k in range(self.count)]
            await self.stopping.wait()
            log.info("stopping %d processes", self.count)
            tasks = [*keepers, *([self.rolling] if self.rolling is not None else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return 0
        finally:
            await self._stop_all()

    async def _start(self, index: int) -> bool:
        """Start member ``index`` and wait until it serves; False if it could not (its
        own message is on stderr) or the parent is stopping."""
        proc = await self._spawn(index)
        if proc is None:
            return False
        self.members[index] = proc
        self.serving.add(index)
        return True

    async def _spawn(self, index: int) -> asyncio.subprocess.Process | None:
        """A new process for member ``index``, once it serves; None if it could not."""
        self.starting.add(index)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.cli", "serve", "--config", str(self.config_path),
                "--member", str(index),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.children.add(proc)
            ready = asyncio.ensure_future(proc.stdout.readline())
            stop = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({ready, stop}, timeout=self.start_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if ready.done() and ready.result() == READY:
                asyncio.ensure_future(self._listen(proc))
                if index in self.reload_pending:
                    self.reload_pending.discard(index)
                    _signal(proc, signal.SIGHUP)
                return proc
            ready.cancel()
            if not ready.done() and not self.stopping.is_set():  # not exited: stuck
                log.error("process %d (pid %d) did not start within %g s", index, proc.pid,
                          self.start_timeout)
            await self._stop(proc)
            return None
        finally:
            self.starting.discard(index)

    async def _keep(self, index: int) -> None:
        """Start member ``index`` again whenever it exits on its own."""
        delay = self.restart_delay
        while True:
            proc = self.members[index]
            started = time.monotonic()
            code = await proc.wait()
            self.children.discard(proc)
            if self.members[index] is not proc:
                continue  # replaced (a rolling restart): the new one is kept now
            self.serving.discard(index)
            if time.monotonic() - started > self.max_restart_delay:
                delay = self.restart_delay  # it had been running well
            log.error("process %d (pid %d) exited with %s: starting it again in %g s",
                      index, proc.pid, _exit_text(code), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_restart_delay)
            while not await self._start(index):
                log.error("process %d could not start: trying again in %g s", index, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)

    def restart(self) -> None:
        """SIGUSR2: replace every member by a new process, one after the other."""
        if len(self.members) < self.count:
            log.warning("SIGUSR2 while the processes start: no rolling restart")
            return
        if self.rolling is not None and not self.rolling.done():
            log.warning("SIGUSR2: a rolling restart is under way already")
            return
        self.rolling = asyncio.ensure_future(self._roll())

    async def _roll(self) -> None:
        log.info("rolling restart of %d processes", self.count)
        if _read(MIGRATE_REQUESTS) == "0":
            log.warning("%s is 0: connections waiting to be accepted by a process that "
                        "stops are reset (1 passes them to another process)",
                        MIGRATE_REQUESTS)
        for index in range(self.count):
            old = self.members[index]
            if index not in self.serving:
                continue  # exited: its keeper's start is a new process already
            new = await self._spawn(index)
            if new is None:
                if not self.stopping.is_set():
                    log.error("rolling restart stopped: a new process %d could not start "
                              "(the others serve on as they were)", index)
                return
            if self.members[index] is not old:  # it died meanwhile, and was started again
                await self._stop(new)
                continue
            self.members[index] = new  # its keeper keeps it from now on
            log.info("process %d replaced: pid %d serves, pid %d stops", index, new.pid, old.pid)
            await self._stop(old)
        log.info("rolling restart done")

    async def _listen(self, proc: asyncio.subprocess.Process) -> None:
        """A member's stdout once it serves: RELOAD, or text passed on."""
        while line := await proc.stdout.readline():
            if line == RELOAD:
                self.reload(reloaded=proc)
            else:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()

    def reload(self, reloaded: asyncio.subprocess.Process | None = None) -> None:
        """SIGHUP: every member reloads (but ``reloaded``, which has), if the file is
        valid; else its problems are printed once, and each keeps what it has."""
        from .serve_cli import load_or_report

        fresh = load_or_report(self.config_path)
        if fresh is None:
            log.error("configuration not reloaded: %s has the problems above", self.config_path)
            return
        if fresh.node.processes != self.count:
            log.warning("processes = %d in %s: restart the node to apply it (still %d)",
                        fresh.node.processes, self.config_path, self.count)
        for index in range(self.count):
            if index in self.starting:
                self.reload_pending.add(index)
            proc = self.members.get(index)
            if index in self.serving and proc is not reloaded:
                _signal(proc, signal.SIGHUP)

    async def _stop_all(self) -> None:
        await asyncio.gather(*(self._stop(p) for p in list(self.children)))

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM (the node finishes what it has started), SIGKILL after stop_timeout."""
        _signal(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            log.error("process pid %d did not stop within %g s: killed", proc.pid,
                      self.stop_timeout)
            _signal(proc, signal.SIGKILL)
            await proc.wait()
        self.children.discard(proc)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:  # not Linux, or a kernel without it
        return None


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Unlike ``proc.send_signal``, which reaps an exited process behind asyncio's
    child watcher (that then reports it as 255), this leaves reaping to the watcher:
    until then the pid is a zombie, not reused."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _exit_text(code: int) -> str:
    if code >= 0:
        return f"code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:  # a signal without a name (real-time)
        return f"signal {-code}"


def supervise(config_path: Path, config) -> int:
    """``ill-node serve`` with ``[node] processes`` above 1."""
    node = config.node
    busy = port_in_use(node.listen_host, node.listen_port)
    if busy is not None:
        print(f"ill-node serve: cannot start: {node.listen}: {busy.strerror} "
              f"(config: {config_path})", file=sys.stderr)
        return 1
    return asyncio.run(Supervisor(config_path, node.processes).run())
