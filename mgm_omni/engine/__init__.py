"""Batching scheduler and jobs shared by the CLI and the server (no HTTP here)."""
