"""A fixed set of worker threads for blocking calls that should overlap (IMDS reads).

The threads start together on first use and are never more nor fewer: a daemon's thread
count is the same after months of attaches as after its first (the soak test holds it
to that), and a call never pays for starting threads. The workers are daemon threads:
a caller always waits for its own calls, so none is left half done by an exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Callable, Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Workers(Generic[A, R]):
    def __init__(self, fn: Callable[[A], R], count: int, name: str) -> None:
        self._fn = fn
        self._count = count
        self._name = name
        self._queue: queue.SimpleQueue[tuple[A, Future[R]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    def map(self, args: Iterable[A]) -> list[R]:
        """`fn` of each argument, the calls spread over the workers; in order. An
        exception a call raised is raised here (the first in order)."""
        self.start()
        futures: list[Future[R]] = []
        for arg in args:
            fut: Future[R] = Future()
            self._queue.put((arg, fut))
            futures.append(fut)
        return [f.result() for f in futures]

    def start(self) -> None:
        """Start the workers now (the first `map` does otherwise)."""
        with self._lock:
            if self._started:
                return
            for i in range(self._count):
                name = f"{self._name}-{i}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
            self._started = True

    def _serve(self) -> None:
        while True:
            arg, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self._fn(arg))
            except BaseException as exc:  # the caller's to handle, in its own thread
                fut.set_exception(exc)
