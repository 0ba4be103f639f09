"""Kernel microbenchmarks: timing harness, in-run roofline, and the speed-regression gate."""
