"""Stopping background tasks for sure.

One `task.cancel()` and an unbounded `await task` can hang forever: on Python 3.11 a cancellation
that lands while an inner `wait_for` (in a client library) completes can be swallowed, and the
task's loop then runs on. `stop_tasks` cancels again until each task has really ended, for at most
`timeout_s`, and says which did not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger("capmesh.tasks")


async def stop_tasks(tasks: Iterable[asyncio.Task | None], timeout_s: float = 5.0) -> bool:
    """Cancels the tasks and waits for them to end; True when all ended within `timeout_s`."""
    pending = {task for task in tasks if task is not None and not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("tasks.stop_timed_out", tasks=sorted(task.get_name() for task in pending))
            return False
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.25, remaining))
    return True
