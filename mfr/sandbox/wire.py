"""The fork server's messages: a pickled request with two descriptors (service -> server),
a pid (server -> service), an exit status (server -> service, on the child's pipe)."""

from __future__ import annotations

import struct

MAX_REQUEST = 1 << 20
PID = struct.Struct("q")
STATUS = struct.Struct("i")
