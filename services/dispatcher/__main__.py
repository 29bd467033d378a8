"""``python -m services.dispatcher``: run the dispatcher."""

from services.dispatcher.server import main

main()
