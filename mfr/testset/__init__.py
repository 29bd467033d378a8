"""Test sets: the shard format, synthetic test sets, and import of real aligned faces."""
