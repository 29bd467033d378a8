"""``python -m services.embedder``: run the embedder service."""

from services.embedder.server import main

main()
