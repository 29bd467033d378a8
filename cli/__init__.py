"""The ``mfr`` command: one module per command group, loaded only when used."""
