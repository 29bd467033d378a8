"""``python -m services.embedder.worker``: run an embedder worker."""

from services.embedder.worker.server import main

main()
