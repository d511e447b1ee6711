"""Timed work, run by APScheduler inside the node's event loop.

One job covers every per-request timer (answer timeouts, retry dates, due
dates): the machines say when they next need the clock (``next_timer``),
the service stores that on the request row, and this job ticks the requests
whose time has come.  The outbox has its own loop; the job here only nudges
it so that back-off retries are not left waiting for new traffic.  Another
deletes the outbox's delivered messages once ``[outbox] keep_sent_days`` have
passed, every hour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

if TYPE_CHECKING:
    from .service import Node

log = logging.getLogger("node.scheduler")


async def _tick(node: Node) -> None:
    task = asyncio.current_task()
    jobs = getattr(node, "_timer_jobs", None)
    if jobs is not None and task is not None:
        jobs.add(task)  # Node.stop() waits for it
        task.add_done_callback(jobs.discard)
    try:
        done = await node.run_due_timers()
        if done:
            log.info("timers: %d request(s) ticked", done)
    except asyncio.CancelledError:  # the node is stopping
        return
    except Exception:  # a failing job must not stop the scheduler
        log.exception("timer job failed")
    node._wake_outbox()


async def _sweep_leases(node: Node) -> None:
    await _guarded("outbox lease sweep", lambda: node.worker_lock.sweep(node.clock()))


async def _prune_outbox(node: Node) -> None:
    await _guarded("outbox prune", node.prune_outbox)


async def _guarded(what: str, work: Callable[[], Awaitable[object]]) -> None:
    try:
        await work()
    except asyncio.CancelledError:  # the node is stopping
        return
    except Exception:  # the database away: the next run tries again
        log.exception("%s failed", what)


#: How often delivered messages past ``[outbox] keep_sent_days`` are deleted; the
#: first time a minute after start, off the start-up path.
PRUNE_EVERY = timedelta(hours=1)
PRUNE_FIRST_AFTER = timedelta(minutes=1)


def start_scheduler(node: Node) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        _tick, "interval", seconds=node.timer_interval_seconds, args=[node],
        id="timers", max_instances=1, coalesce=True,
    )
    if node.worker_lock is not None:  # PostgreSQL: node/liveness.py
        scheduler.add_job(
            _sweep_leases, "interval", seconds=node.timer_interval_seconds, args=[node],
            id="leases", max_instances=1, coalesce=True,
        )
    scheduler.add_job(
        _prune_outbox, "interval", seconds=PRUNE_EVERY.total_seconds(), args=[node],
        id="prune", max_instances=1, coalesce=True,
        next_run_time=datetime.now(UTC) + PRUNE_FIRST_AFTER,
    )
    scheduler.start()
    return scheduler
