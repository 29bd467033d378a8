"""``python -m services.validator``: run the validator service."""

# The guard matters here: the sandbox's fork server re-imports the main
# module in every child it starts, which must not start another server.
if __name__ == "__main__":
    from services.validator.server import main

    main()
