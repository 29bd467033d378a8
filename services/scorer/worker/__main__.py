"""``python -m services.scorer.worker``: run a scorer worker."""

from services.scorer.worker.server import main

main()
