"""Sinks: where valid feature rows go. Each buffers in ``add`` and writes in ``flush``."""
