"""How every command reports an expected failure: ``error[code]: message``, exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from mfr.errors import MfrError

USAGE_EXIT = 2


def reports_errors(func: Callable) -> Callable:
    """Turn MfrError into a one-line message on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MfrError as exc:
            print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
            sys.exit(USAGE_EXIT)

    return wrapper
