"""Executors: where the cells of a sweep run (``suite run --executor NAME``). ``local`` is the default."""
