"""Keeps ``make run``'s processes running, and stops them in the order that loses nothing.

Each child runs in a process group of its own, so a terminal's Ctrl-C (SIGINT to the whole
foreground group) reaches only the launcher, which then stops the children in order:

1. the API and the workers get SIGTERM: the API stops accepting connections and finishes
   the requests it holds; each worker stops taking jobs and lets its running ones finish
   within ``RESQ_SHUTDOWN_GRACE_SECONDS`` (then hands them back or fails them, see
   ``worker.drain``);
2. once the workers are gone, the API gets a moment to relay their last events, then a
   quick stop (idle keep-alive connections would otherwise hold it for its whole timeout);
3. beat, then Redis last, so everything above could still write to it.

A second Ctrl-C (or SIGTERM) kills what is left at once (Redis still gets SIGTERM, which
makes it write its append-only file).

A child that dies while the stack runs is started again after a backoff (0.5 s doubling to
10 s), with a line saying what died, how, and how often. A child that dies ``CRASH_LIMIT``
times within ``CRASH_WINDOW_SECONDS`` stops the whole stack: something is wrong that a restart
will not fix.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("resq")

CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
POLL_SECONDS = 0.1
API_RELAY_SECONDS = 2.0  # the API's time to relay the last events after the workers stop
STOP_MARGIN_SECONDS = 15.0  # past the grace: what a worker needs to hand back and exit
KILL_WAIT_SECONDS = 5.0


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Child:
    """One supervised process. ``spawn`` starts it (and may wait until it serves)."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    deaths: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None  # set while it waits out its backoff

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.process = self.spawn()
        self.restart_at = None

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)


class CrashLoop(Exception):
    """A child keeps dying; the message says which and how."""


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        grace_seconds: float,
        backoff_first: float = BACKOFF_FIRST_SECONDS,
        crash_limit: int = CRASH_LIMIT,
    ) -> None:
        self.children = {child.name: child for child in children}
        self.grace_seconds = grace_seconds
        self.backoff_first = backoff_first
        self.crash_limit = crash_limit
        self.stop_requests = 0  # SIGINT/SIGTERM received: 1 drains, 2 stops at once

    def request_stop(self, _signum: int = 0, _frame: object = None) -> None:
        """The launcher's signal handler: only counts (the loops below act on it)."""
        self.stop_requests += 1

    def start_all(self) -> None:
        for child in self.children.values():
            child.start()

    def watch_once(self, now: float | None = None) -> None:
        """Notice dead children and start them again when their backoff is over."""
        now = time.monotonic() if now is None else now
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    log.info("starting %s again (restart %d)", child.name, child.restarts)
                    try:
                        child.start()
                    except Exception as exc:  # e.g. Redis cannot load its files
                        self._died(child, f"could not start ({exc})", now)
                continue
            if child.process is None or child.running:
                continue
            pid = child.process.pid
            self._died(child, f"(pid {pid}) {describe_exit(child.process.returncode)}", now)

    def _died(self, child: Child, how: str, now: float) -> None:
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > CRASH_WINDOW_SECONDS:
            child.deaths.popleft()
        if len(child.deaths) >= self.crash_limit:
            raise CrashLoop(
                f"{child.name} died {len(child.deaths)} times within "
                f"{CRASH_WINDOW_SECONDS:g} s (last: {how}); stopping resq (see its output above)"
            )
        delay = min(BACKOFF_MAX_SECONDS, self.backoff_first * 2 ** (len(child.deaths) - 1))
        log.warning(
            "%s %s; starting it again in %g s (restart %d)",
            child.name,
            how,
            delay,
            child.restarts + 1,
        )
        child.restart_at = now + delay

    # ---- stopping -------------------------------------------------------------------------

    def _wait(self, names: list[str], seconds: float, *, at_once: bool = True) -> bool:
        """Wait up to ``seconds`` for these children to exit; False if some still run. Stops
        waiting early when a second stop request arrives (unless ``at_once`` is False)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not any(self.children[n].running for n in names if n in self.children):
                return True
            if at_once and self.stop_requests >= 2:
                return False
            time.sleep(POLL_SECONDS)
        return not any(self.children[n].running for n in names if n in self.children)

    def _kill(self, names: list[str]) -> None:
        for name in names:
            child = self.children.get(name)
            if child is not None and child.running:
                log.warning("%s did not stop in time; killing it", name)
                child.signal(signal.SIGKILL)
        self._wait(names, KILL_WAIT_SECONDS, at_once=False)

    def stop_all(
        self, *, first: list[str], api: list[str], then: list[str], last: list[str]
    ) -> None:
        """Stop in order (module docstring). ``first``: the workers; ``api``: the API;
        ``then``: beat; ``last``: Redis."""
        started = time.monotonic()
        for name in first + api:
            self.children[name].restart_at = None
        for name in [*first, *api]:
            self.children[name].signal(signal.SIGTERM)
        if not self._wait(first, self.grace_seconds + STOP_MARGIN_SECONDS):
            self._kill(first)
        self._stopped(first, started)
        if not self._wait(api, API_RELAY_SECONDS):
            for name in api:
                self.children[name].signal(signal.SIGINT)  # gunicorn: quick stop
            if not self._wait(api, KILL_WAIT_SECONDS):
                self._kill(api)
        self._stopped(api, started)
        for name in then:
            self.children[name].signal(signal.SIGTERM)
        if not self._wait(then, KILL_WAIT_SECONDS):
            self._kill(then)
        self._stopped(then, started)
        for name in last:
            self.children[name].signal(signal.SIGTERM)  # Redis writes its append-only file
        if not self._wait(last, 10.0, at_once=False):
            self._kill(last)
        self._stopped(last, started)

    def _stopped(self, names: list[str], started: float) -> None:
        if names:
            log.info("%s stopped (%.1f s)", " and ".join(names), time.monotonic() - started)
