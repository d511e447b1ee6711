"""What the outbox tests share: a worker running in a task for the length of an
``async with`` (their partners are tests.peer.LoopbackPeer)."""

from __future__ import annotations

import asyncio

from node.outbox import OutboxWorker


class running:
    """``async with running(worker):`` runs the worker in a task and stops it after."""

    def __init__(self, worker: OutboxWorker):
        self.worker = worker

    async def __aenter__(self) -> OutboxWorker:
        self.task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc) -> None:
        await asyncio.wait_for(self.worker.stop(), 10)
        await asyncio.wait_for(self.task, 10)
