"""Model resolution: ``--model``, the built-in defaults, the local hub cache."""
