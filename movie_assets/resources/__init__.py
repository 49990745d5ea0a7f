"""One resource or IO manager per module."""
