"""The seccomp filter of a model's process, through libseccomp (``pyseccomp``, a ctypes
binding with the API of libseccomp's own Python module, which is not on PyPI).

Everything is allowed except what a model never needs: creating sockets (every
family on CPU runtimes; all but Unix ones on CUDA, whose driver may talk to its own
daemons), exec after start-up, ptrace and reading other processes' memory, mounts,
new namespaces, keyrings, BPF, io_uring (its operations would bypass this filter) and
kernel modules. A denied call fails with EPERM (``PermissionError`` in Python), so a
model that tries is refused with a clear error, not killed. Other architectures' calls
(32-bit ``int 0x80``) kill the process: libseccomp's default for a foreign ABI.
"""

from __future__ import annotations

import errno
import socket

DENIED = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "open_by_handle_at", "name_to_handle_at",
)
# clone() flags that make a namespace: a thread or a fork passes none of them.
NAMESPACE_FLAGS = (0x00000080, 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                   0x20000000, 0x40000000)


def install(allow_unix_sockets: bool = False) -> None:
    """Load the filter into this process (and sets no_new_privs). Raises OSError, or
    ImportError where libseccomp is missing."""
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(defaction=sc.ALLOW)
    if allow_unix_sockets:
        rules.add_rule(deny, "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    else:
        rules.add_rule(deny, "socket")
    for name in DENIED:
        rules.add_rule(deny, name)
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: "not here" makes glibc fall
    # back to clone(), whose flags are checked above.
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    rules.load()


def preload() -> None:
    """Import the binding before the fork: finding libseccomp runs ``ldconfig``, which a
    confined process can no longer exec."""
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError, AttributeError):
        pass  # reported by install() in the child, where the policy decides
