"""For tests of a process whose model processes cannot confine themselves."""

from __future__ import annotations


def refuse_seccomp() -> None:
    """Load a filter that refuses ``seccomp()`` and ``prctl(PR_SET_SECCOMP)`` into this
    process, as a container runtime's profile may: every process it starts inherits it, so
    its model processes genuinely cannot install their own filter. Irreversible: call it
    only in a process started for the test."""
    import errno

    import pyseccomp as sc

    rules = sc.SyscallFilter(sc.ALLOW)
    rules.add_rule(sc.ERRNO(errno.EPERM), "seccomp")
    rules.add_rule(sc.ERRNO(errno.EPERM), "prctl", sc.Arg(0, sc.EQ, 22))  # PR_SET_SECCOMP
    rules.load()
