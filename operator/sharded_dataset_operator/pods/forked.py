"""The planner's second process: the sorted records merged, grouped and judged in a forked child, whose
samples stream back through a pipe while the planner encodes them and writes the plan, the units and the
membership.

Both halves are single-threaded Python; on two cores each takes about half of a plan line's cost (ImageNet at
1/4: the child merging, grouping and judging, the planner encoding the line, its digest and the writers). The
child reads only (the sorted runs; a fraction split's own sort runs are its own), with a client of its own:
connections are never shared across processes. Items cross in batches of plain tuples (a named tuple pickles
~20x slower) and become what the planner needs on this side (`convert`). The child's failure is the
planner's: its exception is raised again here, with its type when it pickles; a child that dies without a
word is a RuntimeError.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

BATCH = 1024
"""Items per message."""
JOIN_SECONDS = 10.0

_SAMPLES, _DONE, _ERROR = "samples", "done", "error"
Item = TypeVar("Item")
Out = TypeVar("Out")
T = TypeVar("T")


class ProducerFailed(RuntimeError):
    """The producer failed with an exception that could not be sent back as itself."""


class Forked(Generic[Item, Out, T]):
    """Iterate `convert(item)` of each item `produce()` yields in a forked child (plain tuples); once they are all
    through, `result` holds what `finish()` returned in the child (called after the last item)."""

    def __init__(
        self, produce: Callable[[], Iterable[Item]], convert: Callable[[Item], Out], finish: Callable[[], T]
    ) -> None:
        self._produce, self._convert, self._finish = produce, convert, finish
        self.result: T | None = None
        self.pid: int | None = None
        self._process: Any = None

    def __iter__(self) -> Iterator[Out]:
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=self._child, args=(send,), name="plan-producer", daemon=True)
        child.start()
        self.pid, self._process = child.pid, child
        send.close()
        done = False
        try:
            while True:
                try:
                    data = receive.recv_bytes()
                except EOFError:
                    child.join(JOIN_SECONDS)
                    raise RuntimeError(
                        f"the plan's sample producer (pid {child.pid}) ended without finishing "
                        f"(exit code {child.exitcode})"
                    ) from None
                kind, payload = pickle.loads(data)
                if kind == _SAMPLES:
                    convert = self._convert
                    for item in payload:
                        yield convert(item)
                elif kind == _DONE:
                    self.result = payload
                    done = True
                    return
                else:
                    raise _exception(payload)
        finally:
            receive.close()
            self.close(wait=done)

    def close(self, wait: bool = False) -> None:
        """End the child if it still runs (the planner failed or stopped reading; `wait`: it has sent everything,
        give it `JOIN_SECONDS` to exit first); safe to call again."""
        child = self._process
        if child is None:
            return
        if wait:
            child.join(JOIN_SECONDS)
        if child.is_alive():
            child.terminate()
            child.join(JOIN_SECONDS)
        if child.is_alive():
            child.kill()
        child.join(JOIN_SECONDS)

    def _child(self, send: Connection) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler raises; here SIGTERM just ends it
        try:
            batch: list[Item] = []
            for item in self._produce():
                batch.append(item)
                if len(batch) >= BATCH:
                    send.send_bytes(pickle.dumps((_SAMPLES, batch), pickle.HIGHEST_PROTOCOL))
                    batch = []
            if batch:
                send.send_bytes(pickle.dumps((_SAMPLES, batch), pickle.HIGHEST_PROTOCOL))
            send.send_bytes(pickle.dumps((_DONE, self._finish()), pickle.HIGHEST_PROTOCOL))
        except BaseException as e:
            send.send_bytes(pickle.dumps((_ERROR, _portable(e)), pickle.HIGHEST_PROTOCOL))
        finally:
            send.close()


def _portable(e: BaseException) -> tuple[bytes | None, str]:
    """The exception pickled (None if it cannot be, or not read back) and its text with the child's traceback."""
    text = "".join(traceback.format_exception(e)).strip()
    try:
        data = pickle.dumps(e, pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)  # an exception whose __init__ takes other arguments than args fails only here
    except Exception:  # then it goes as text
        return None, text
    return data, text


def _exception(payload: tuple[bytes | None, str]) -> BaseException:
    data, text = payload
    if data is not None:
        e: BaseException = pickle.loads(data)
        e.add_note(f"raised in the plan's sample producer:\n{text}")
        return e
    return ProducerFailed(f"the plan's sample producer failed: {text.splitlines()[-1] if text else '?'}")
