"""The embedder worker process: shards from the queue, each in a confined model process."""
