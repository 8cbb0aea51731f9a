"""Processes and scratch directories that must not outlive the run that made them.

A `kill -9` of a run gives it no chance to clean up, so cleanup is arranged in
advance: children ask the kernel to kill them when their parent dies
(PR_SET_PDEATHSIG), and scratch directories carry the pid of the process that
made them, so the next run removes those whose maker is gone.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile

_PR_SET_PDEATHSIG = 1
# The kinds of scratch directory synth makes (only these are ever removed).
SCRATCH_KINDS = ("sandbox",)
# synth-<kind>-<pid>-<random>: the pid says whether its maker still lives.
_SCRATCH_NAME = re.compile(rf"^synth-(?:{'|'.join(SCRATCH_KINDS)})-(\d+)-[A-Za-z0-9_]+$")


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have the kernel send `sig` to this process when its parent exits (Linux only).

    `parent` is the pid the caller expects as parent: if it is already gone (the
    parent died before the request was made), exit now rather than live on. The
    kernel ties the signal to the parent *thread* that started the child, so the
    parent must start children from a thread that outlives them (the driver's
    main thread; a sandbox's waiting thread).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and (os.getppid() == 1 or (parent is not None and os.getppid() != parent)):
        os._exit(1)
    return ok


def make_scratch_dir(kind: str) -> str:
    """A private directory named after this process, so a later run can tell it is stale."""
    if kind not in SCRATCH_KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}; known: {', '.join(SCRATCH_KINDS)}")
    return tempfile.mkdtemp(prefix=f"synth-{kind}-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_scratch(root: str | None = None) -> int:
    """Remove this user's scratch directories whose making process is dead; how many."""
    root = root or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    uid = os.getuid()
    for entry in entries:
        m = _SCRATCH_NAME.match(entry.name)
        if not m:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if _alive(int(m.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.exists(entry.path)
    return removed
