"""Protocol kinds scored from listed pairs (DESIGN.md section 3.1), beside the tiled
all/cross engine: ``pairs`` (TAR@FAR or k-fold accuracy) and ``templates``.

Listed pairs are few (thousands to millions), so every listed pair is scored
canonically, with no fast path: the results are the same bits on every backend
and for any number of workers.
"""
