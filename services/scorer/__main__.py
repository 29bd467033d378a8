"""``python -m services.scorer``: run the scorer service."""

from services.scorer.server import main

main()
