"""The platform on one machine: real PostgreSQL and S3 servers from wheels, and the services."""
