"""``python -m services.ranker``: run the ranker service."""

from services.ranker.server import main

main()
