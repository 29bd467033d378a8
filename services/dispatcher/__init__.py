"""The dispatcher: drives each submission through validator, embedder, scorer and ranker."""
