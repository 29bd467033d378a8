"""The environment block a model's process starts with: an allow-list, nothing inherited.

The fork server that starts every model process is exec'd with this block (what
``/proc/PID/environ`` shows for it and for every child it forks), so no credential,
database URL or token of the service can reach a participant's model, whatever the
service's own environment holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Names passed through from the service when set there: where to find programs and
# libraries, the locale, and the devices and threads a runtime may use. Never a value
# that grants access to anything.
PASSED = (
    "PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES",
)
# A name with one of these in it never passes, even if a later edit adds it above.
SECRET_HINTS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "PASSWD", "CREDENTIAL", "URL", "DSN",
                "AUTH")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(hint in upper for hint in SECRET_HINTS)


def confined_environment(scratch: str, threads: int = 1,
                         source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed block: the passed names present in ``source`` (the service's
    environment), one thread per math library unless a runtime asks for more, and a
    scratch ``HOME``/``TMPDIR`` (caches that runtimes write, e.g. CUDA's, land there)."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in PASSED
           if name in source and not is_secret_name(name)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update({"HOME": scratch, "TMPDIR": scratch, "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONNOUSERSITE": "1"})
    return env
