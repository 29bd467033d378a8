"""PostgreSQL access: a psycopg 3 pool, and migrations as a separate step."""
