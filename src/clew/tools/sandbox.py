"""How a bubblewrap sandbox is built: its settings, the ``bwrap`` command line and a seccomp filter.

Pure functions and a frozen record; ``clew.tools.python`` runs what they describe. The sandbox a
tool call gets (issue 14: model-written code is the most dangerous input an RL run handles):

- namespaces: ``--unshare-all`` (user, pid, net, ipc, uts, cgroup), so no network interface but a
  down loopback, no view of host processes, and ``--disable-userns`` so the code cannot make more;
- identity: uid/gid 65534 inside, every capability dropped, ``--new-session`` (no terminal
  injection), ``--die-with-parent``; when the host process is root, bwrap itself is started as
  uid/gid 65534 as well, so even an escape would land as ``nobody``;
- files: read-only binds of ``/usr``, the ``/bin``/``/lib*`` links or dirs and the few ``/etc``
  files the dynamic loader reads; a size-capped tmpfs at ``/scratch`` (also ``/tmp``, the cwd and
  ``HOME``) is the only writable place, fresh for each call; ``/`` and ``/dev`` are remounted
  read-only; the host's home, work tree, run directory and ``/tmp`` are simply not there;
- environment: ``--clearenv`` then PATH, HOME, TMPDIR, LANG and MALLOC_ARENA_MAX only;
- seccomp (x86-64): ``ptrace``, ``process_vm_*``, mount and namespace calls, ``bpf``,
  ``perf_event_open``, keyrings, kernel modules, ``kexec``, ``io_uring``, ``userfaultfd`` and the
  x32 ABI fail with EPERM, and 32-bit (i386) system calls kill the process; another architecture
  runs without the filter (the namespaces and dropped capabilities still apply) because its syscall
  table is not written down here.
- a case where the sandbox runs with a python outside /usr (pyenv, hosted toolcache): only that
  interpreter's prefix is added, read-only, at its own path.

Rlimits (CPU, address space, file size, processes, open files, no core files) are set by the
bootstrap inside the sandbox before the code runs, so that a warm worker can serve any limits.
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap); "
    "on Ubuntu >= 23.10 unprivileged user namespaces must also be allowed for bwrap "
    "(sysctl kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for /usr/bin/bwrap). "
    "To run model code without any sandbox (unsafe), pass unsafe_local=True."
)
SANDBOX_UID = 65534  # nobody
SCRATCH = "/scratch"
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
# glibc reserves 64 MiB of address space per thread arena, so a few threads exhaust RLIMIT_AS; two arenas suffice.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2"}


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of the sandbox shared by every call (per-call limits travel with the call).

    Attributes:
        bwrap: path or name of the bubblewrap binary.
        interpreter: python run inside; None picks a system python3 under /usr, else this process's
            base interpreter (its prefix bound read-only at the same path).
        scratch_mb: size of the /scratch tmpfs (all files the code writes, together).
        max_output_bytes: stdout and stderr are each cut here; a call that prints more is stopped.
        nproc: RLIMIT_NPROC inside (processes and threads of the sandbox user).
        nofile: RLIMIT_NOFILE inside.
        fsize_mb: RLIMIT_FSIZE inside (largest file the code may write).
        seccomp: install the seccomp filter (x86-64 only).
        startup_timeout_s: how long a sandbox may take to come up before it counts as unavailable.
    """

    bwrap: str = "bwrap"
    interpreter: str | None = None
    scratch_mb: int = 32
    max_output_bytes: int = 65536
    nproc: int = 32
    nofile: int = 64
    fsize_mb: int = 16
    seccomp: bool = True
    startup_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("scratch_mb", "max_output_bytes", "nproc", "nofile", "fsize_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxConfig.{name} must be >= 1, got {getattr(self, name)}")


def find_bwrap(name: str) -> str | None:
    """The bwrap executable for ``name`` (a path or a name on PATH), or None."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name)


def find_interpreter(configured: str | None = None) -> tuple[str, str | None]:
    """``(python, extra_bind)``: the interpreter to run inside and a prefix to bind for it (or None).

    A system python3 under /usr needs no extra bind. Otherwise this process's base interpreter is
    used (a pyenv or hosted-toolcache build) and its ``sys.base_prefix`` is bound read-only.
    """
    if configured is not None:
        real = os.path.realpath(configured)
        return configured, None if real.startswith("/usr/") else _prefix_of(real)
    for candidate in _SYSTEM_PYTHONS:
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate).startswith("/usr/"):
            return candidate, None
    base = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    return base, sys.base_prefix


def _prefix_of(interpreter: str) -> str:
    return str(Path(interpreter).parent.parent)


def system_binds(extra_bind: str | None) -> list[str]:
    """Read-only binds of the system: /usr, the /bin and /lib* links or dirs, loader files in /etc."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        args += ["--ro-bind-try", path, path]
    if extra_bind is not None and not extra_bind.startswith("/usr/"):
        args += ["--ro-bind", extra_bind, extra_bind]
    return args


def bwrap_command(
    cfg: SandboxConfig,
    bwrap: str,
    python: str,
    extra_bind: str | None,
    bootstrap: str,
    seccomp_fd: int | None,
    info_fd: int | None = None,
) -> list[str]:
    """The full command line: namespaces, identity, binds, scratch tmpfs, environment, then python.

    ``info_fd`` receives bwrap's JSON about the sandbox (its child's host pid, used to kill it).
    """
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL", "--hostname", "sandbox"]
    args += system_binds(extra_bind)
    args += ["--dev", "/dev", "--proc", "/proc"]
    args += ["--perms", "0700", "--size", str(cfg.scratch_mb << 20), "--tmpfs", SCRATCH, "--symlink", SCRATCH, "/tmp"]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH, "--clearenv"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": SCRATCH, "LANG": "C.UTF-8", **MALLOC_ENV}
    for key, value in env.items():
        args += ["--setenv", key, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return [*args, *interpreter_command(python, bootstrap)]


def interpreter_command(python: str, bootstrap: str) -> list[str]:
    """Isolated mode (no PYTHON* variables, no user site), no bytecode files, UTF-8 streams."""
    return [python, "-I", "-B", "-X", "utf8", "-c", bootstrap]


# --- seccomp -------------------------------------------------------------------------------
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM = 1
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "chroot": 161, "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "clock_settime": 227, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298, "fanotify_init": 300,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "pivot_root": 155,
}  # fmt: skip


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_program(denied: dict[str, int] = DENIED_X86_64) -> bytes:
    """A classic-BPF seccomp program for x86-64: other arches are killed, x32 and ``denied`` get EPERM.

    Layout: check ``seccomp_data.arch`` (offset 4), load ``nr`` (offset 0), then one
    ``jeq nr -> ret ERRNO`` pair per denied call, and ``ret ALLOW`` at the end.
    """
    errno = _RET_ERRNO | _EPERM
    prog = [_insn(_LD_W_ABS, 0, 0, 4), _insn(_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), _insn(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    prog += [_insn(_LD_W_ABS, 0, 0, 0), _insn(_JGE_K, 0, 1, _X32_BIT), _insn(_RET_K, 0, 0, errno)]
    for nr in sorted(denied.values()):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, errno)]
    prog.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def seccomp_supported() -> bool:
    """The filter is written for x86-64 Linux only."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def seccomp_fd() -> int:
    """A fresh memfd holding the filter, positioned at 0 (bwrap reads and closes it)."""
    fd = os.memfd_create("clew-seccomp")  # close-on-exec; Popen(pass_fds=...) hands it on
    os.write(fd, seccomp_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
