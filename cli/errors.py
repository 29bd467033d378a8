"""How every command reports an expected failure: ``error[code]: message``, exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from mfr.errors import MfrError

USAGE_EXIT = 2


def reports_errors(func: Callable) -> Callable:
    """Turn MfrError (and unreadable settings) into one line on stderr and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MfrError as exc:
            print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
            sys.exit(USAGE_EXIT)
        except Exception as exc:
            if not _is_settings_error(exc):
                raise
            from mfr.settings import config_problem

            print(f"error[config_invalid]: {config_problem(exc)}", file=sys.stderr)
            sys.exit(USAGE_EXIT)

    return wrapper


def _is_settings_error(exc: Exception) -> bool:
    """Settings read from the environment failed (pydantic, imported only when needed:
    `mfr score` must run where only numpy is installed)."""
    try:
        from pydantic import ValidationError
    except ImportError:
        return False
    return isinstance(exc, ValidationError)
