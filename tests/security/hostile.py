"""The catalogue of hostile programs run by ``test_sandbox_escapes.py``, as a new attacker would write them.

Placeholders filled per run: ``@TARGET@`` (a host path that must never be created), ``@RUNDIR@`` (a
host dir holding ``secret.txt``), ``@PORT@`` (a host TCP listener on 127.0.0.1), ``@HOSTPID@`` (a
host sentinel process), ``@TESTPID@`` (the pytest process), ``@MARKER@`` (put in the command line
of any process the program leaves behind), ``@SECRET_HEAD@`` (the first half of the planted secret,
so the program can hunt for it without containing it).

``expect`` names what the call itself must report besides "no effect on the host": ``timeout``
(stopped by the time limit), ``truncated`` (stopped for output), ``error`` (exit code != 0), or
``any``; ``a|b`` accepts either. Every case prints nothing secret; the harness checks that.
"""

# ruff: noqa: E501  (one hostile program per line reads better than wrapped string fragments)
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    expect: str = "any"


_LIBC = "import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)\n"
_DAEMON = (
    "import os, sys, time\n"
    "def daemon():\n"
    "    if os.fork() == 0:\n"
    "        os.setsid()\n"
    "        if os.fork() == 0:\n"
    "            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '@MARKER@'])\n"
    "        os._exit(0)\n"
)

CASES = [
    # --- processes and CPU ---------------------------------------------------------------
    Case(
        "fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", "timeout"
    ),
    Case("shell_fork_bomb", "import os\nos.system(':(){ :|:& };:')\nimport time\ntime.sleep(30)", "timeout"),
    Case("infinite_loop", "while True:\n    pass", "timeout"),
    Case(
        "spinning_threads",
        "import threading\ndef spin():\n    while True:\n        pass\n"
        "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()\nspin()",
        "timeout",
    ),
    Case(
        "thousands_of_threads",
        "import threading, time\nfor _ in range(10000):\n    threading.Thread(target=time.sleep, args=(30,)).start()",
        "error|timeout",  # thread creation fails; the interpreter may then wait for the sleeping ones
    ),
    Case("sleep_past_timeout", "import time\ntime.sleep(60)", "timeout"),
    Case(
        "ignore_sigterm",
        "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.05)",
        "timeout",
    ),
    Case(
        "zombies", "import os\nfor _ in range(10):\n    if os.fork() == 0:\n        os._exit(0)\nprint('left zombies')"
    ),
    Case(
        "orphans",
        "import subprocess, sys\nfor _ in range(3):\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '@MARKER@'])\nprint('orphaned')",
    ),
    Case("double_fork_setsid_daemon", _DAEMON + "daemon()\nprint('daemonised')"),
    Case("daemon_then_sleep_past_timeout", _DAEMON + "daemon()\ntime.sleep(60)", "timeout"),
    Case("shell_background_job", "import os\nos.system('nohup sleep 60 @MARKER@ >/dev/null 2>&1 &')\nprint('bg')"),
    Case("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('sent')"),
    Case(
        "kill_pid_1", "import os, signal\nfor s in (signal.SIGKILL, signal.SIGTERM):\n    os.kill(1, s)\nprint('sent')"
    ),
    Case("kill_everything", "import os, signal\nos.kill(-1, signal.SIGKILL)"),
    Case(
        "kill_host_pids",
        "import os\nfor pid in (@HOSTPID@, @TESTPID@):\n    try:\n        os.kill(pid, 9)\n    except OSError as e:\n        print(pid, e)",
    ),
    Case("setuid_root", "import os\nos.setuid(0)", "error"),
    # --- memory, disk, descriptors, output -------------------------------------------------
    Case("memory_bomb", "x = bytearray(10 ** 10)", "error"),
    Case("memory_growth", "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2 ** 20))", "error|timeout"),
    Case("mmap_bomb", "import mmap\nm = mmap.mmap(-1, 2 ** 36)", "error"),
    Case("fill_disk", "with open('big', 'wb') as f:\n    while True:\n        f.write(b'0' * 2 ** 20)", "error"),
    Case("many_files", "i = 0\nwhile True:\n    open(f'f{i}', 'w').write('x' * 4096)\n    i += 1", "error|timeout"),
    Case("exhaust_fds", "fs = []\nwhile True:\n    fs.append(open('/dev/null'))", "error"),
    Case("exhaust_sockets", "import socket\nss = []\nwhile True:\n    ss.append(socket.socket())", "error"),
    Case("huge_stdout", "print('x' * 10 ** 8)", "truncated"),
    Case("huge_stderr", "import sys\nsys.stderr.write('e' * 10 ** 8)", "truncated"),
    Case("output_flood", "while True:\n    print('y' * 1000)", "truncated"),
    # --- network ---------------------------------------------------------------------------
    Case("connect_loopback", "import socket\nsocket.create_connection(('127.0.0.1', @PORT@), timeout=1)", "error"),
    Case("connect_outside", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", "error"),
    Case("dns_lookup", "import socket\nprint(socket.getaddrinfo('example.com', 80))", "error"),
    Case(
        "udp_out",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))",
        "error",
    ),
    Case("shell_dev_tcp", "import os\nprint(os.system(\"bash -c 'echo hi > /dev/tcp/127.0.0.1/@PORT@'\"))"),
    Case("raw_socket", "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", "error"),
    # --- reading secrets -----------------------------------------------------------------
    Case("read_etc_shadow", "print(open('/etc/shadow').read())", "error"),
    Case("read_home", "import os\nprint(os.listdir('/root'))\nprint(open('/root/.bashrc').read())", "error"),
    Case("read_run_dir", "print(open('@RUNDIR@/secret.txt').read())", "error"),
    Case(
        "read_host_tmp", "import os\nprint(os.listdir('/tmp'))\nprint(open('@RUNDIR@/../secret.txt').read())", "error"
    ),
    Case("read_environ", "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())"),
    Case(
        "read_parent_environ",
        "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\nprint(open('/proc/@TESTPID@/environ').read())",
        "error",
    ),
    Case(
        "read_proc_1",
        "import os\nfor f in ('cmdline', 'environ', 'status'):\n    print(open(f'/proc/1/{f}', 'rb').read())\nprint(os.listdir('/proc/1/root'))",
    ),
    Case(
        "scan_all_proc_environ",
        "import os\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n    try:\n"
        "        print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n    except OSError as e:\n        print(pid, e)",
    ),
    Case(
        "hunt_secret_on_disk",
        "import os\nhead = '@SECRET_HEAD@'\nfor root, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/usr')]\n"
        "    for name in files:\n        try:\n            data = open(os.path.join(root, name), 'rb').read(1 << 20)\n"
        "        except OSError:\n            continue\n        if head.encode() in data:\n"
        "            print('FOUND', os.path.join(root, name), data)",
    ),
    # --- writing outside scratch, links, dot-dot ----------------------------------------------
    Case("write_target", "open('@TARGET@', 'w').write('pwned')", "error"),
    Case("write_root_dir", "open('/evil', 'w').write('pwned')", "error"),
    Case("write_system", "open('/usr/lib/clew_evil', 'w').write('pwned')", "error"),
    Case("write_dev_shm", "open('/dev/shm/clew_evil', 'w').write('pwned')", "error"),
    Case("write_proc_sys", "open('/proc/sys/vm/drop_caches', 'w').write('1')", "error"),
    Case("symlink_escape", "import os\nos.symlink('@TARGET@', 'link')\nopen('link', 'w').write('pwned')", "error"),
    Case(
        "symlink_dir_escape",
        "import os\nos.symlink('/usr/lib', 'lib')\nopen('lib/clew_evil', 'w').write('pwned')",
        "error",
    ),
    Case("dotdot_escape", "open('../' * 12 + '@TARGET@'.lstrip('/'), 'w').write('pwned')", "error"),
    Case(
        "subprocess_write",
        "import subprocess\nprint(subprocess.run(['sh', '-c', 'echo pwned > @TARGET@; cat /etc/shadow; ls /root']).returncode)",
    ),
    Case("os_system_write", "import os\nprint(os.system('touch @TARGET@ /evil /usr/lib/clew_evil'))"),
    # --- kernel attack surface ---------------------------------------------------------------
    Case("ptrace_attach_pid_1", _LIBC + "print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())"),
    Case(
        "ptrace_traceme", _LIBC + "r = libc.ptrace(0, 0, 0, 0)\nprint('ptrace', r, ctypes.get_errno())\nassert r == -1"
    ),
    Case("ctypes_segfault", "import ctypes\nctypes.string_at(0)", "error"),
    Case(
        "ctypes_mount",
        _LIBC + "r = libc.mount(b'none', b'/usr', b'tmpfs', 0, None)\nprint(r, ctypes.get_errno())\nassert r == -1",
    ),
    Case("ctypes_unshare_user", _LIBC + "r = libc.unshare(0x10000000)\nprint(r, ctypes.get_errno())\nassert r == -1"),
    Case("chroot", "import os\nos.chroot('/scratch')", "error"),
    Case(
        "bpf_and_keyctl",
        _LIBC + "print([libc.syscall(n, 0, 0, 0) for n in (321, 250, 425, 298, 0x40000027)], ctypes.get_errno())",
    ),
]
