"""Task plugins: one file per benchmark, on a family base from ``families/``.

Registered tasks: ``glue`` (with ``glue_metrics``, the official metric definitions), ``smoke``
(synthetic, offline), ``gsm8k`` (scored through ``lm_eval_scoring``, lm-evaluation-harness
with the model in memory), ``vtab`` and ``images`` (VTAB-1k's protocol), and ``pretraining``
(``lm``, ``lm-c4``, ``lm-wikitext``: language-model pretraining judged by held-out loss).

Every module here that calls ``register_task`` is discovered and imported by the registry on
first use.
"""
