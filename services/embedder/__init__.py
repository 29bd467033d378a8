"""The embedder: runs a model over a test set's shards into a feature matrix (onnxruntime)."""
