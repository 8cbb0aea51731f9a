"""A time limit on one call, without a process or a thread per call.

`PageDeadline` interrupts the code it wraps when the limit passes, by raising
`DeadlineExceeded` in the thread that runs it:

- in a process's main thread where `signal.setitimer` exists (Linux, macOS):
  a SIGALRM interval timer, armed before the call and cleared after it;
- elsewhere (a worker thread, Windows, or a SIGALRM timer already in use by
  someone else): one watchdog thread per `PageDeadline`, reused for every
  call, that raises the exception asynchronously in the waiting thread.

Both interrupt Python code only between bytecodes: a single long C call (one
regex, one lxml parse) finishes before the exception lands. trafilatura spends
its time in Python loops over the tree, so a stalled page is stopped close to
the limit.

`DeadlineExceeded` derives from BaseException so that the broad
`except Exception` blocks inside extraction libraries cannot swallow it;
`PageDeadline.call` catches it and sets `expired`.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time


class DeadlineExceeded(BaseException):
    """Raised inside the wrapped call when its time is up (caught by PageDeadline)."""


class PageDeadline:
    """`deadline.call(fn, ...)` runs fn under the limit; `deadline.expired` says
    whether it was cut off (the call then returns None).

    seconds=None (or 0) means no limit and costs nothing.
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds or None
        self.expired = False
        self.mode = ""  # how the last call was limited: "signal", "watchdog" or "" (no limit)
        self._armed = False
        self._watchdog: _Watchdog | None = None
        self._previous_handler = None

    def call(self, fn, *args, **kwargs):
        self.expired = False
        if not self.seconds:
            self.mode = ""
            return fn(*args, **kwargs)
        try:
            self._arm()
            try:
                return fn(*args, **kwargs)
            finally:
                self._disarm()
        except DeadlineExceeded:
            # Also reached when the limit passes just as fn returns, inside _disarm:
            # _disarm is idempotent, so clearing again is safe.
            self._disarm()
            self.expired = True
            return None

    def _can_use_signal(self) -> bool:
        if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
            return False
        # A timer someone else armed (a test harness, an outer limit) is not ours to clobber.
        return signal.getitimer(signal.ITIMER_REAL)[0] == 0.0

    def _arm(self) -> None:
        if self._can_use_signal():
            self.mode = "signal"
            self._previous_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            self.mode = "watchdog"
            if self._watchdog is None:
                self._watchdog = _Watchdog()
            self._watchdog.arm(threading.get_ident(), self.seconds)

    def _on_alarm(self, signum, frame) -> None:
        # A late alarm (after the call returned, before the timer was cleared) is ignored.
        if self._armed:
            self._armed = False
            raise DeadlineExceeded()

    def _disarm(self) -> None:
        if self.mode == "signal":
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self._previous_handler is not None:
                signal.signal(signal.SIGALRM, self._previous_handler)
                self._previous_handler = None
        elif self.mode == "watchdog" and self._watchdog is not None and self._watchdog.disarm():
            self.expired = True

    def close(self) -> None:
        """Stop the watchdog thread, if one was started."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None


class _Watchdog:
    """One daemon thread that interrupts a waiting thread when its deadline passes."""

    def __init__(self):
        self._cond = threading.Condition()
        self._target: int | None = None
        self._due = 0.0
        self._fired = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="synth-page-deadline", daemon=True)
        self._thread.start()

    def arm(self, thread_id: int, seconds: float) -> None:
        with self._cond:
            self._target, self._due, self._fired = thread_id, time.monotonic() + seconds, False
            self._cond.notify()

    def disarm(self) -> bool:
        """Stop watching; True when the deadline had already fired."""
        with self._cond:
            fired, target = self._fired, self._target
            self._target, self._fired = None, False
            if fired and target is not None:
                # The exception may still be pending (not yet delivered): cancel it so it
                # cannot land in the caller's code after the call.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)
            return fired

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._target is None or self._fired:
                    self._cond.wait()
                    continue
                left = self._due - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(DeadlineExceeded)
                )
