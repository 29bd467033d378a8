"""The scorer worker process: plan, tile and merge tasks from the queue."""
