"""Where a participant's model runs: a confined child of the model fork server.

A service (the validator, an embedder worker) never forks a model's process itself.
It execs one fork server (:mod:`mfr.sandbox.server`) with an allow-listed environment
(:mod:`mfr.sandbox.environment`: no credential, token or database URL), which forks
one child per model. Before the child reads the model it closes every descriptor but
its channel and confines itself (:mod:`mfr.sandbox.policy`): resource limits, Landlock
(:mod:`mfr.sandbox.landlock`: opens only the model, its input, its scratch folder and
the code it runs; no TCP; no signals beyond itself) and seccomp
(:mod:`mfr.sandbox.seccomp`: no sockets, no exec, no ptrace, mounts or namespaces).
docs/validation.md has the threat model: what a hostile model can try, what stops it.
"""

from mfr.sandbox.client import Child, ForkServer, fork_server
from mfr.sandbox.policy import UNCONFINED_EXIT, Confinement

__all__ = ["UNCONFINED_EXIT", "Child", "Confinement", "ForkServer", "fork_server"]
