"""The gateway's HTTP routes, one small module per resource."""
