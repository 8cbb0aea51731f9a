"""Run untrusted Python (model-written code and its tests) without trusting it.

Each execution is a fresh interpreter (`python -I -S -B`, an empty environment)
in a throwaway directory, and it confines itself before the untrusted code runs.
The layers, strongest first; each one that the kernel or the permissions refuse
is skipped and reported in `ExecResult.layers`, never silently assumed:

1. Network namespace: `unshare(CLONE_NEWNET)` (as root, or inside a new user
   namespace otherwise). The child sees only a loopback that is down. In a
   private mount namespace its directory becomes a tmpfs capped in bytes and
   inodes (`disk-quota(tmpfs)`); where mounting is refused, the parent measures
   the directory as it runs and kills it past the budget (`disk-quota(polled)`).
2. Landlock (Linux >= 5.13): the child may read only the interpreter's standard
   library, system libraries and its own directory, and write only its own
   directory; TCP bind/connect are denied (ABI >= 4); signals and abstract
   unix sockets outside the sandbox are denied (ABI >= 6). This is what keeps the
   user's files (home, repository) unreadable even when the child runs as root.
3. Capabilities (root only): bounding set and effective/permitted sets dropped,
   `no_new_privs` set, so root inside cannot mount, raise limits or regain power.
4. seccomp-bpf (x86_64, aarch64): no new processes (fork, vfork, clone without
   CLONE_THREAD; clone3 answers ENOSYS so threads fall back to clone), no exec,
   no sockets, no ptrace/mount/namespaces/bpf/keyrings/io_uring, no prlimit on
   other processes, no signals to other processes (kill, tkill, tgkill and
   rt_(tg)sigqueueinfo only to itself; pidfd_open/send_signal/getfd refused).
   This is the process-count limit that also holds for root, for whom the
   kernel never enforces RLIMIT_NPROC, and the signal fence on kernels
   without Landlock's scope layer (Linux < 6.12).
5. rlimits: CPU seconds (SIGXCPU), address space (MemoryError), file size (every
   file the child writes, stdout and stderr included, is capped), open files,
   no core dumps; without seccomp, RLIMIT_NPROC for non-root users (it counts
   all of the uid's processes, so it is set just above the current count).
6. A Python audit hook: blocks sockets, subprocesses, ctypes and file opens
   outside the allowed directories. On its own it is not a sandbox (CPython says
   so); it is the last layer where the kernel offers none of the above.

The parent adds a wall-clock limit (the child runs in its own session and the
whole group is killed) and reads at most `output_bytes` of each stream. The
child dies with its parent (PR_SET_PDEATHSIG), and its scratch directory is
named after the parent's pid so a rerun removes it after a crash.

When tests are given, they run after the program in its namespace and the
launcher then writes a per-run secret to a file the program cannot open: a pass
is proven by the tests reaching their end, so a program that exits early
(`sys.exit(0)`, `os._exit(0)`) has not passed (`tests_completed` is False).

This module is also the launcher: run as a script it confines itself and runs the
program, so it imports only the standard library.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

STATUS_OK = "ok"
STATUS_ERROR = "error"  # the program raised or exited non-zero (a failed assert too)
STATUS_TIMEOUT = "timeout"  # CPU or wall-clock limit
STATUS_MEMORY = "memory_limit"
STATUS_OUTPUT = "output_limit"
STATUS_DISK = "disk_limit"  # the scratch directory's byte or inode budget
STATUS_SANDBOX = "sandbox_error"  # the sandbox itself could not start (not the code's fault)

# Names `require` accepts: each matches the layers whose name starts with it.
LAYER_NAMES = (
    "netns",
    "disk-quota",
    "landlock",
    "landlock-fs",
    "landlock-net",
    "landlock-scope",
    "no-capabilities",
    "seccomp",
    "rlimits",
    "nproc",
    "audit-hook",
)

# Exit code the launcher uses when confinement fails before user code ran.
_LAUNCH_FAILED = 97


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 512
    output_bytes: int = 64_000  # kept from each of stdout/stderr
    file_bytes: int = 1_000_000  # largest file the child may write (stdout/stderr included)
    open_files: int = 64
    # the scratch directory's budget: total bytes and files/directories
    disk_bytes: int = 64 * 1024 * 1024
    disk_inodes: int = 2048
    # When False (the default) the child sees the standard library only.
    site_packages: bool = False
    # The Python-level layer; tests turn it off to prove the kernel layers alone hold.
    audit_hook: bool = True
    # Refuse to run at all unless these layers are active ("netns", "landlock", "seccomp").
    require: tuple[str, ...] = ()
    # Layers not to set up, to see how the others hold (tests; a kernel without them).
    disable: tuple[str, ...] = ()


@dataclass
class ExecResult:
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    layers: list[str] = field(default_factory=list)
    # with tests: whether they ran to their end (None: no tests were given)
    tests_completed: bool | None = None

    def stderr_tail(self, chars: int = 500) -> str:
        return self.stderr[-chars:]


def run_python(
    program: str, limits: SandboxLimits = SandboxLimits(), python: str | None = None, tests: str | None = None
) -> ExecResult:
    """Run `program` (Python source) confined; never raises for anything the program does.

    `tests` (Python source) run after the program in its namespace; `tests_completed`
    then says whether they reached their end."""
    from synth.core.scratch import make_scratch_dir

    base = make_scratch_dir("sandbox")
    try:
        control = os.path.join(base, "control")
        work = os.path.join(base, "work")
        os.makedirs(control)
        os.makedirs(os.path.join(work, "tmp"))
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as fh:
            fh.write(program)
        proof = secrets.token_hex(16)
        config = {
            "work": work,
            "program": os.path.join(work, "main.py"),
            "layers_file": os.path.join(control, "layers.json"),
            "limits": asdict(limits),
            "read_paths": _read_paths(limits.site_packages),
            "parent": os.getpid(),
            "tests": tests,
            "proof": proof if tests is not None else None,
            "proof_file": os.path.join(control, "proof"),
        }
        config_path = os.path.join(control, "config.json")
        with open(config_path, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": work,
            "TMPDIR": os.path.join(work, "tmp"),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
        }
        out_path, err_path = os.path.join(control, "stdout"), os.path.join(control, "stderr")
        start = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [python or sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), config_path],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=work,
                env=env,
                start_new_session=True,  # its own process group: the wall-clock kill reaches everything
                close_fds=True,
            )
            try:
                timed_out, over_disk = _wait(proc, limits, work)
            finally:
                _kill_group(proc)
        seconds = time.monotonic() - start
        stdout, out_full = _read_capped(out_path, limits.output_bytes, limits.file_bytes)
        stderr, err_full = _read_capped(err_path, limits.output_bytes, limits.file_bytes)
        try:
            with open(config["layers_file"], encoding="utf-8") as fh:
                layers = json.load(fh)
        except (OSError, ValueError):
            layers = []
        status = _classify(proc.returncode, timed_out, stderr, out_full or err_full, over_disk)
        completed = None
        if tests is not None:
            try:
                with open(config["proof_file"], encoding="utf-8") as fh:
                    completed = fh.read() == proof
            except OSError:
                completed = False
        return ExecResult(status, proc.returncode, stdout, stderr, round(seconds, 4), layers, completed)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def available_layers(python: str | None = None) -> list[str]:
    """The confinement layers this machine grants (runs a trivial program)."""
    return run_python("pass", SandboxLimits(), python).layers


def _wait(proc: subprocess.Popen, limits: SandboxLimits, work: str) -> tuple[bool, bool]:
    """Wait for the child within the wall-clock limit, measuring its directory as it
    runs (the budget where no tmpfs could be mounted; with one, the parent sees an
    empty mount point). (timed out, over the disk budget)."""
    deadline = time.monotonic() + limits.wall_seconds
    while True:
        try:
            proc.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            return False, _over_budget(work, limits)
        except subprocess.TimeoutExpired:
            pass
        if _over_budget(work, limits):
            return False, True
        if time.monotonic() >= deadline:
            return True, False


def _over_budget(work: str, limits: SandboxLimits) -> bool:
    size = inodes = 0
    stack = [work]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            inodes += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    size += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
            if inodes > limits.disk_inodes or size > limits.disk_bytes:
                return True
    return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read_capped(path: str, keep: int, file_cap: int) -> tuple[str, bool]:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        data = fh.read(keep)
    text = data.decode("utf-8", "replace")
    if size > keep:
        text += f"\n... [{size - keep} more bytes]"
    return text, size >= min(keep, file_cap) and size > keep


_DISK_FULL = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "[Errno 122]")


def _classify(
    returncode: int | None, timed_out: bool, stderr: str, output_overflow: bool, over_disk: bool = False
) -> str:
    if returncode == _LAUNCH_FAILED and "synth-sandbox: " in stderr:
        return STATUS_SANDBOX
    if over_disk:
        return STATUS_DISK
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return STATUS_TIMEOUT
    if returncode != 0 and any(s in stderr[-2000:] for s in _DISK_FULL):
        return STATUS_DISK
    if "MemoryError" in stderr[-2000:]:
        return STATUS_MEMORY
    if output_overflow:
        return STATUS_OUTPUT
    if returncode == 0:
        return STATUS_OK
    return STATUS_ERROR


def _read_paths(site_packages: bool) -> list[str]:
    """Directories the child may read: the interpreter's library and system libraries."""
    import sysconfig

    paths = {sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")}
    if site_packages:
        paths |= {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    paths |= {"/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/usr/share/zoneinfo"}
    return sorted(p for p in paths if p and os.path.exists(p))


# ---------------------------------------------------------------------------
# The launcher: everything below runs inside the child, before the program.
# ---------------------------------------------------------------------------

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _syscall(nr: int, *args) -> int:
    return _c().syscall(ctypes.c_long(nr), *args)


_CLONE_NEWNET, _CLONE_NEWNS, _CLONE_NEWUSER = 0x40000000, 0x00020000, 0x10000000


def _unshare(network: bool, mounts: bool) -> tuple[bool, bool]:
    """New network and/or mount namespaces: (network done, mounts done)."""
    if not (network or mounts):
        return False, False
    wanted = (_CLONE_NEWNET if network else 0) | (_CLONE_NEWNS if mounts else 0)
    if _c().unshare(wanted) == 0:
        return network, mounts
    if network and mounts and _c().unshare(_CLONE_NEWNET) == 0:
        return True, False
    # Unprivileged: a user namespace grants the right to own the others.
    uid, gid = os.getuid(), os.getgid()
    if _c().unshare(_CLONE_NEWUSER | wanted) != 0:
        if not (network and mounts) or _c().unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            return False, False
        wanted = _CLONE_NEWNET
    # Map our own ids, or files the program creates would have no owner (EOVERFLOW).
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1"),
        ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError:
            pass
    return bool(wanted & _CLONE_NEWNET), bool(wanted & _CLONE_NEWNS)


_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 1 << 14, 1 << 18


def _mount_scratch(work: str, disk_bytes: int, disk_inodes: int, files: dict[str, str]) -> bool:
    """Replace the work directory (in this private mount namespace) by a tmpfs capped
    in bytes and inodes, holding the same files."""
    # Private first: a mount must never propagate back to the host's namespace.
    if _c().mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return False
    options = f"size={disk_bytes},nr_inodes={disk_inodes + 8},mode=0700".encode()
    if _c().mount(b"tmpfs", os.fsencode(work), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        return False
    os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(work, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    return True


def _own_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _set_limits(limits: dict) -> None:
    cpu = int(limits["cpu_seconds"])
    memory = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_bytes"]), int(limits["file_bytes"])))
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["open_files"]), int(limits["open_files"])))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# -- Landlock ---------------------------------------------------------------------

_LL_CREATE, _LL_ADD, _LL_RESTRICT = 444, 445, 446  # same numbers on x86_64 and aarch64
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_DIR_WRITE = sum(1 << b for b in range(4, 13))  # remove/make dir, file, sock, fifo, dev, symlink
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def _landlock(work: str, read_paths: list[str]) -> list[str]:
    abi = _syscall(_LL_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1 or platform.machine() not in ("x86_64", "aarch64"):
        return []
    handled = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_READ_DIR | _FS_DIR_WRITE
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    attr = _RulesetAttr(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    ruleset = _syscall(_LL_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return []
    file_rights = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

    def allow(path: str, rights: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= file_rights
            rule = _PathBeneath(rights, fd)
            if _syscall(_LL_ADD, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
        finally:
            os.close(fd)

    for path in read_paths:
        allow(path, read)
    for dev in ("/dev/null", "/dev/zero", "/dev/urandom"):
        if os.path.exists(dev):
            allow(dev, _FS_READ_FILE | _FS_WRITE_FILE)
    allow(work, handled & ~_FS_IOCTL_DEV)
    if _syscall(_LL_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)
    layers = [f"landlock-fs(abi{abi})"]
    if abi >= 4:
        layers.append("landlock-net")
    if abi >= 6:
        layers.append("landlock-scope")
    return layers


# -- capabilities -------------------------------------------------------------------

_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECCOMP, _PR_SET_PDEATHSIG = 38, 24, 22, 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> bool:
    for cap in range(64):
        _c().prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last cap: fine
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    return _c().capset(ctypes.byref(header), data) == 0


# -- seccomp ----------------------------------------------------------------------

# name -> number, per architecture (only what the filter names).
_SYSCALLS = {
    "x86_64": dict(
        arch=0xC000003E,
        clone=56,
        clone3=435,
        fork=57,
        vfork=58,
        execve=59,
        execveat=322,
        socket=41,
        socketpair=53,
        ptrace=101,
        mount=165,
        umount2=166,
        pivot_root=155,
        chroot=161,
        unshare=272,
        setns=308,
        bpf=321,
        perf_event_open=298,
        keyctl=250,
        add_key=248,
        request_key=249,
        io_uring_setup=425,
        userfaultfd=323,
        process_vm_readv=310,
        process_vm_writev=311,
        kexec_load=246,
        init_module=175,
        finit_module=313,
        delete_module=176,
        reboot=169,
        swapon=167,
        swapoff=168,
        personality=135,
        prlimit64=302,
        open_by_handle_at=304,
        name_to_handle_at=303,
        fsopen=430,
        fsmount=432,
        move_mount=429,
        open_tree=428,
        kill=62,
        tkill=200,
        tgkill=234,
        rt_sigqueueinfo=129,
        rt_tgsigqueueinfo=297,
        pidfd_send_signal=424,
        pidfd_open=434,
        pidfd_getfd=438,
    ),
    "aarch64": dict(
        arch=0xC00000B7,
        clone=220,
        clone3=435,
        execve=221,
        execveat=281,
        socket=198,
        socketpair=199,
        ptrace=117,
        mount=40,
        umount2=39,
        pivot_root=41,
        chroot=51,
        unshare=97,
        setns=268,
        bpf=280,
        perf_event_open=241,
        keyctl=219,
        add_key=217,
        request_key=218,
        io_uring_setup=425,
        userfaultfd=282,
        process_vm_readv=270,
        process_vm_writev=271,
        kexec_load=104,
        init_module=105,
        finit_module=273,
        delete_module=106,
        reboot=142,
        swapon=224,
        swapoff=225,
        personality=92,
        prlimit64=261,
        open_by_handle_at=265,
        name_to_handle_at=264,
        fsopen=430,
        fsmount=432,
        move_mount=429,
        open_tree=428,
        kill=129,
        tkill=130,
        tgkill=131,
        rt_sigqueueinfo=138,
        rt_tgsigqueueinfo=240,
        pidfd_send_signal=424,
        pidfd_open=434,
        pidfd_getfd=438,
    ),
}
# Signal syscalls whose first argument is the target: allowed only at the process itself.
_SELF_SIGNALS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp() -> bool:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno_ret = lambda e: 0x00050000 | e  # noqa: E731
    eperm, eagain, enosys = errno_ret(1), errno_ret(11), errno_ret(38)
    clone_thread = 0x00010000
    special = ("arch", "clone", "clone3", "prlimit64", "fork", "vfork") + _SELF_SIGNALS
    denied = [n for k, n in table.items() if k not in special]
    own_pid = os.getpid()
    no_process = [table[k] for k in ("fork", "vfork") if k in table]

    # Instructions with symbolic jump targets, resolved below.
    prog: list[tuple[int, object, object, int]] = [
        (ld, 0, 0, 4),  # arch
        (jeq, 0, "kill", table["arch"]),
        (ld, 0, 0, 0),  # syscall number
    ]
    if platform.machine() == "x86_64":
        prog.append((jge, "eperm", 0, 0x40000000))  # x32 ABI numbers
    prog += [(jeq, "eperm", 0, n) for n in denied]
    prog += [(jeq, "eagain", 0, n) for n in no_process]
    prog += [(jeq, "self_signal", 0, table[k]) for k in _SELF_SIGNALS]
    prog += [
        (jeq, "enosys", 0, table["clone3"]),
        (jeq, "clone", 0, table["clone"]),
        (jeq, "prlimit", 0, table["prlimit64"]),
        (ret, 0, 0, allow),
        ("clone", None, None, None),
        (ld, 0, 0, 16),  # args[0] low word: clone flags
        (jset, "allow", "eagain", clone_thread),
        ("prlimit", None, None, None),
        (ld, 0, 0, 16),  # args[0]: pid, 0 = self
        (jeq, "allow", "eperm", 0),
        ("self_signal", None, None, None),
        (ld, 0, 0, 16),  # args[0]: the target pid/tgid/tid; 0 = own process group (a session of one)
        (jeq, "allow", 0, own_pid),
        (jeq, "allow", "eperm", 0),
        ("allow", None, None, None),
        (ret, 0, 0, allow),
        ("eperm", None, None, None),
        (ret, 0, 0, eperm),
        ("eagain", None, None, None),
        (ret, 0, 0, eagain),
        ("enosys", None, None, None),
        (ret, 0, 0, enosys),
        ("kill", None, None, None),
        (ret, 0, 0, kill),
    ]
    labels, code = {}, []
    for item in prog:
        if isinstance(item[0], str):
            labels[item[0]] = len(code)
        else:
            code.append(item)

    def target(t, i):
        return labels[t] - i - 1 if isinstance(t, str) else t

    insns = (_SockFilter * len(code))(
        *[_SockFilter(c, target(jt, i), target(jf, i), k) for i, (c, jt, jf, k) in enumerate(code)]
    )
    fprog = _SockFprog(len(code), insns)
    return _c().prctl(_PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0) == 0


# -- audit hook ---------------------------------------------------------------------


def _audit_hook(work: str, read_paths: list[str]):
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    readable = tuple(os.path.realpath(p) for p in read_paths) + (work, "/dev/null", "/dev/urandom")
    blocked_prefixes = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "ctypes.", "pty.", "os.fork")
    blocked = {"os.system", "os.kill", "os.killpg", "os.forkpty", "shutil.rmtree", "signal.pthread_kill"}

    def inside(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def hook(event: str, args: tuple) -> None:
        if event in blocked or event.startswith(blocked_prefixes):
            if (
                event == "shutil.rmtree"
                and isinstance(args[0], (str, bytes))
                and inside(os.path.realpath(os.fsdecode(args[0])), (work,))
            ):
                return
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and isinstance(args[0], (str, bytes)):
            path = os.path.realpath(os.fsdecode(args[0]))
            mode, flags = args[1], args[2] or 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & write_flags)
            if not inside(path, (work,) if writing else readable):
                raise PermissionError(f"sandbox: {'write' if writing else 'read'} outside the sandbox: {path}")
        elif event in (
            "os.remove",
            "os.rename",
            "os.mkdir",
            "os.rmdir",
            "os.symlink",
            "os.link",
            "os.chmod",
            "os.chown",
            "os.truncate",
            "os.utime",
        ):
            for arg in args[:2]:
                if isinstance(arg, (str, bytes)) and not inside(os.path.realpath(os.fsdecode(arg)), (work,)):
                    raise PermissionError(f"sandbox: {event} outside the sandbox")

    return hook


def _launch(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    # Die with the parent: a killed run leaves no sandbox running (and if the parent
    # is already gone, do not start at all).
    if _c().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0 and os.getppid() != config.get(
        "parent", os.getppid()
    ):
        os._exit(_LAUNCH_FAILED)
    limits, work = config["limits"], config["work"]
    disabled = set(limits.get("disable", ()))
    with open(config["program"], encoding="utf-8") as fh:
        source = fh.read()
    layers: list[str] = []
    code = compile(source, "main.py", "exec")  # a syntax error is the program's, reported as such
    tests = compile(config["tests"], "tests.py", "exec") if config.get("tests") is not None else None
    report = open(config["layers_file"], "w", encoding="utf-8")  # opened now: Landlock forbids it later
    proof_file = open(config["proof_file"], "w", encoding="utf-8") if tests is not None else None
    try:
        processes = _own_process_count() if os.getuid() != 0 else 0
        netns, mountns = _unshare("netns" not in disabled, "disk-quota" not in disabled)
        if netns:
            layers.append("netns")
        if mountns and _mount_scratch(work, int(limits["disk_bytes"]), int(limits["disk_inodes"]), {"main.py": source}):
            layers.append("disk-quota(tmpfs)")
        else:
            layers.append("disk-quota(polled)")  # the parent measures the directory as it runs
        _set_limits(limits)
        layers.append("rlimits")
        if _c().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "no_new_privs")
        if "landlock" not in disabled:
            layers += _landlock(work, config["read_paths"])
        # Root, or a user namespace, holds capabilities: give them all up.
        if "no-capabilities" not in disabled and _drop_capabilities():
            layers.append("no-capabilities")
        if "seccomp" not in disabled and _seccomp():
            layers.append("seccomp")
        elif os.getuid() != 0:
            # No seccomp: RLIMIT_NPROC counts every process of this uid, so allow
            # only a few beyond those the user already runs (root is never limited).
            resource.setrlimit(resource.RLIMIT_NPROC, (processes + 4, processes + 4))
            layers.append("nproc")
        if limits.get("audit_hook", True):
            layers.append("audit-hook")
        json.dump(layers, report)
        report.close()
        missing = [name for name in limits.get("require", ()) if not any(layer.startswith(name) for layer in layers)]
        if missing:
            raise OSError(f"required layers unavailable: {', '.join(missing)} (have {', '.join(layers)})")
    except OSError as exc:
        sys.stderr.write(f"synth-sandbox: cannot confine: {exc}\n")
        sys.stderr.flush()
        os._exit(_LAUNCH_FAILED)
    # Signal calls the audit hook cannot see: gone from the program's reach.
    import posix

    for module, name in (
        (os, "pidfd_open"),
        (posix, "pidfd_open"),
        (signal, "pidfd_send_signal"),
        (signal, "pthread_kill"),
    ):
        if hasattr(module, name):
            delattr(module, name)
    proof = config.pop("proof", None)
    if limits.get("audit_hook", True):
        sys.addaudithook(_audit_hook(work, config["read_paths"]))
    os.chdir(work)
    sys.argv = ["main.py"]
    sys.path.insert(0, work)
    # The program gets a fresh __main__ module, not the launcher's namespace.
    main = type(sys)("__main__")
    main.__file__ = os.path.join(work, "main.py")
    sys.modules["__main__"] = main
    exec(code, main.__dict__)
    if tests is not None:
        exec(tests, main.__dict__)
        # Reached only when every test ran: an early exit of the program never gets here.
        proof_file.write(proof)
        proof_file.close()


if __name__ == "__main__":
    _launch(sys.argv[1])
