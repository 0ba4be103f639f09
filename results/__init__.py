"""The parquet result store: schema, atomic writes, reads and queries."""

from suite.results.schema import COLUMNS, PREDICTION_COLUMNS, SCHEMA_VERSION
from suite.results.store import ResultStore, load

__all__ = ["COLUMNS", "PREDICTION_COLUMNS", "SCHEMA_VERSION", "ResultStore", "load"]
