"""Checks of an uploaded model that more than one process applies: the reference checker's
static rules, the zip rules, and the report they fill (the validator runs them all; the
gateway runs the zip rules early, the embedder makes the batch dimension dynamic)."""
