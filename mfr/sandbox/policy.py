"""What confines one model process, and applying it in that process before the model.

In order, in the freshly forked child: every descriptor but its channel closed, stdin
from /dev/null and stdout/stderr into its log, resource limits (``mfr.sandbox.limits``),
scratch ``HOME``/``TMPDIR``, Landlock (the files it may open), then the seccomp filter
(the calls it may make) with no_new_privs. The seccomp filter is required: a child that
cannot install it exits with ``UNCONFINED_EXIT`` before it reads the model, unless the
organiser opted out (``MFR_ALLOW_UNCONFINED_MODELS=1``, logged at start, in health).
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from mfr.sandbox import landlock, seccomp
from mfr.sandbox.limits import limit_resources

UNCONFINED_EXIT = 86  # the child could not be confined: not the model's doing
# What every Python process reads: the interpreter's libraries and the system's.
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/dev/null",
               "/dev/zero", "/dev/urandom", "/dev/random", "/proc/self", "/proc/cpuinfo",
               "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu",
               "/sys/devices/system/node", "/sys/fs/cgroup")
GPU_READ = ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices", "/sys/module/nvidia")


# What apply() enforced in this process (read by mfr.sandbox.inspect).
ENFORCED: dict = {}


class Unconfined(Exception):
    """The filter could not be installed (reason in the message)."""


@dataclass(frozen=True)
class Confinement:
    """One model process's limits and the files it may touch (pickled service -> child)."""

    workdir: str  # scratch: its only writable folder (log, working directory, outputs)
    log_name: str
    memory_bytes: int
    file_bytes: int
    gpu: bool = False
    read: tuple[str, ...] = ()  # the model and its input, beyond the code it runs
    required: bool = True  # False only with the organiser's explicit opt-out


def code_paths() -> list[str]:
    """The interpreter, its site-packages, and this platform's own packages: never a
    whole checkout, where a state folder with credentials may live."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key)))
    for name in ("mfr", "services"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            paths.add(str(Path(module.__file__).parent))
    return sorted(paths)


def apply(policy: Confinement) -> dict:
    """Confine this process (the child, before it touches the model); what was enforced."""
    workdir = Path(policy.workdir)
    limit_resources(workdir, policy.memory_bytes, policy.file_bytes, not policy.gpu,
                    policy.log_name)
    os.environ.update(HOME=str(workdir), TMPDIR=str(workdir))
    devices = glob.glob("/dev/nvidia*") if policy.gpu else []
    read = [*code_paths(), *SYSTEM_READ, *(GPU_READ if policy.gpu else ()), *policy.read]
    enforced = {"landlock_abi": 0, "seccomp": False}
    try:
        enforced["landlock_abi"] = landlock.restrict(read, [str(workdir)], devices)
    except OSError as exc:  # a kernel that has it but refuses: seccomp still applies
        print(f"mfr sandbox: Landlock not applied: {exc}", file=sys.stderr, flush=True)
    try:
        seccomp.install(allow_unix_sockets=policy.gpu)
        enforced["seccomp"] = True
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:
        reason = f"the seccomp filter cannot be installed: {exc}"
        if policy.required:
            raise Unconfined(reason) from exc
        print(f"mfr sandbox: {reason}; running unconfined (opted out)", file=sys.stderr,
              flush=True)
    ENFORCED.update(enforced)
    return enforced
