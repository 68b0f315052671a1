"""One asyncio event loop per process, in a daemon thread, that runs every remote provider call.

A caller thread submits a coroutine with a total time limit and waits for it. When the limit is reached the
task is cancelled inside the loop: the async SDK closes the HTTP connection and the caller returns; no thread
is left running the call (the loop thread is shared and stays). `Stream` does the same for a streamed reply,
item by item. A process forked after the loop started gets a loop of its own on first use.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
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


_ITEM, _END, _ERROR = "item", "end", "error"


class Stream:
    """The items of an async iterator that runs on the provider loop, read from a caller thread.

    The whole iteration is cancelled after `limit_s` seconds in total, when `deadline` is cancelled, or when the
    reader calls `close()` (it stopped reading: the client went away); the async SDK then closes the HTTP
    connection. Failures and cancellation reach the reader as they do from `run` (TimeoutError when cut short).
    """

    def __init__(self, make: Callable[[], Any], limit_s: float, deadline: Any = None):
        self._items: queue.Queue = queue.Queue()
        self._ends_at = time.monotonic() + limit_s + GRACE_S
        self._done = False

        async def pump() -> None:
            try:
                async with asyncio.timeout(limit_s):
                    async for item in make():
                        self._items.put((_ITEM, item))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader (cancellation re-raised)
                self._items.put((_ERROR, exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                self._items.put((_END, None))

        self._future = asyncio.run_coroutine_threadsafe(pump(), loop())
        # cancelled before it started: pump never runs, so say so here
        self._future.add_done_callback(lambda f: f.cancelled() and self._items.put((_ERROR, CancelledError())))
        self._forget = deadline.on_cancel(self._future.cancel) if deadline is not None else None

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        try:
            kind, value = self._items.get(timeout=max(0.0, self._ends_at - time.monotonic()))
        except queue.Empty:
            self.close()
            raise TimeoutError("the stream did not end in time") from None
        if kind == _ITEM:
            return value
        self._finish()
        if kind == _END:
            raise StopIteration
        if isinstance(value, (CancelledError, asyncio.CancelledError)):
            raise TimeoutError("cancelled") from None
        raise value

    def close(self) -> None:
        """Stop reading: the iteration is cancelled (a no-op once it ended)."""
        self._future.cancel()
        self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._forget is not None:
            self._forget, forget = None, self._forget
            forget()
