"""Task adapters on family bases: GLUE and smoke (text classification); more families plug in here.

Every module here that calls ``register_task`` is discovered and imported by the registry on
first use.
"""
