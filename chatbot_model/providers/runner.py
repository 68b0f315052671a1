"""One asyncio event loop per process, in a daemon thread, that runs every remote provider call.

A caller thread submits a coroutine with a total time limit and waits for it. When the limit is reached the
task is cancelled inside the loop: the async SDK closes the HTTP connection and the caller returns; no thread
is left running the call (the loop thread is shared and stays). A process forked after the loop started gets
a loop of its own on first use.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import CancelledError
from typing import Any, Awaitable, Callable

GRACE_S = 1.0  # extra wait for the loop to deliver the cancellation before the caller gives up on it

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def loop() -> asyncio.AbstractEventLoop:
    """The running provider loop of this process (started on first use)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            new = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(ready.set)
                new.run_forever()

            threading.Thread(target=run, name="provider-loop", daemon=True).start()
            ready.wait()
            _loop, _pid = new, os.getpid()
        return _loop


def run(make: Callable[[], Awaitable[Any]], limit_s: float, deadline: Any = None) -> Any:
    """Run `make()` on the provider loop, cancelled after `limit_s` seconds in total (TimeoutError), or when
    `deadline` (a `Deadline`) is cancelled (TimeoutError too)."""

    async def bounded() -> Any:
        async with asyncio.timeout(limit_s):
            return await make()

    future = asyncio.run_coroutine_threadsafe(bounded(), loop())
    forget = deadline.on_cancel(future.cancel) if deadline is not None else None
    try:
        return future.result(limit_s + GRACE_S)
    except CancelledError:
        raise TimeoutError("cancelled") from None
    finally:
        future.cancel()  # a no-op when done; else (loop slow, caller interrupted) the task is cancelled
        if forget is not None:
            forget()
