"""MFR platform: the code every service shares.

The generated gRPC code lives here too, under ``mfr/<service>/v1/`` (from
``protos/mfr/<service>/v1/*.proto``); nothing hand-written goes into those
folders.
"""

__version__ = "0.1.0"
