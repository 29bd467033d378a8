"""``python -m gateway``: run the participants' HTTP gateway."""

from gateway.server import main

main()
