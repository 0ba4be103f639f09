"""GSM8K: fine-tune a causal LM on math word problems, score it with lm-evaluation-harness.

The experiment peft's ``method_comparison`` runs, as one line: train on GSM8K train (or
MetaMathQA, rows of at most 1,300 characters, as peft does), validate on 50 rows carved
from GSM8K train, and score the GSM8K test set through lm-eval's own ``gsm8k`` task with
the adapted model in memory, greedy decoding with bounded new tokens, zero-shot by default
(fine-tuned models answer in the trained format). Both of lm-eval's answer extractions are
stored: ``strict-match`` (the ``#### N`` the GSM8K answers end with) and ``flexible-extract``
(the last number), since strict collapses to 0 for models that answer in another format.
The primary metric is flexible-extract exact match; per-problem correctness under both goes
to the per-example records, so paired tests across methods and seeds work.

Data: the hub (``openai/gsm8k``, ``meta-math/MetaMathQA``) or ``--data-dir`` with the original
files: ``train.jsonl`` and ``test.jsonl`` (``{"question", "answer"}``), and for MetaMathQA
``MetaMathQA-395K.json`` (``[{"query", "response", ...}]``).
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from suite.config import option
from suite.errors import UserError
from suite.metrics import score
from suite.registry import register_task
from suite.task import EvalOutput, Metric, ModelBundle, evaluation_mode
from suite.tasks.families.answer_generation import CausalLMOptions, CausalLMTask
from suite.tasks.text_files import ENCODING, not_utf8, open_text

HUB_GSM8K = "openai/gsm8k"
HUB_METAMATH = "meta-math/MetaMathQA"
METAMATH_FILE = "MetaMathQA-395K.json"
# peft method_comparison's prompt, for training and for scoring alike.
PROMPT = "Question: {question} Think step by step.\nAnswer:"
STRICT, FLEXIBLE = "strict-match", "flexible-extract"
FIELDS = ("question", "answer")
# The end of every GSM8K answer: lm-eval's target is what follows "#### " (its strict-match reads the same number).
FINAL_ANSWER = re.compile(r"#### -?[0-9.,]*[0-9][0-9.,]*\s*\Z")


@dataclass(frozen=True)
class Gsm8kOptions(CausalLMOptions):
    train_data: Literal["gsm8k", "metamath"] = option("gsm8k", "train on GSM8K train or on MetaMathQA")
    few_shot: int = option(0, "in-context examples at scoring (peft's benchmark: 0 for fine-tuned models)")
    validation_rows: int = option(50, "rows carved from GSM8K train (never trained on) for --eval-every")
    max_chars: int = option(1300, "MetaMathQA rows longer than this (query + response) are left out, as "
                                  "peft's benchmark does")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.few_shot < 0 or self.validation_rows < 1 or self.max_chars < 1:
            raise ValueError("few_shot must be >= 0, validation_rows and max_chars >= 1")


@register_task("gsm8k", kind="causal-lm", summary="GSM8K math word problems: fine-tune, score with lm-eval "
               "(strict and flexible exact match), forgetting", paper="Cobbe et al. 2021, GSM8K (arXiv:2110.14168)")
class Gsm8kTask(CausalLMTask):
    family = "gsm8k"
    version = "1"
    default_model = "meta-llama/Llama-3.2-3B"
    primary_metric = "exact_match_flexible"
    eval_splits = ("test",)
    validation_split = "valid"  # ``validate`` scores the rows carved from train, never the test set
    metrics = (*CausalLMTask.metrics, score("exact_match_strict", "exact match (strict)", per_example="correct_strict"),
               score("exact_match_flexible", "exact match (flexible)", per_example="correct"),
               score("valid_exact_match_strict", "validation exact match (strict)", split="valid"),
               score("valid_exact_match_flexible", "validation exact match (flexible)", split="valid"))
    max_new_tokens: ClassVar[int] = 300
    Options: ClassVar[type] = Gsm8kOptions

    # -- data ---------------------------------------------------------------------------------
    def data_source(self) -> str:
        return f"dir:{os.path.abspath(self.data_dir)}" if self.data_dir else f"hub:{HUB_GSM8K}"

    def _file(self, name: str) -> Path:
        return Path(self.data_dir) / name

    def check_data(self) -> None:
        super().check_data()
        from suite.tasks.lm_eval_scoring import require_lm_eval

        require_lm_eval()
        if not self.data_dir:
            return
        needed = ["train.jsonl", "test.jsonl"] + ([METAMATH_FILE] if self.options.train_data == "metamath" else [])
        missing = [n for n in needed if not self._file(n).is_file()]
        if missing:
            raise UserError(f"GSM8K: missing {', '.join(missing)} in {self.data_dir}; expected the original files "
                            f"(train.jsonl and test.jsonl with question/answer; {METAMATH_FILE} for "
                            f"--train-data metamath)")
        for split in ("train", "test"):  # every row, before any cell: lm-eval reads test.jsonl on its own
            read_gsm8k(self._file(f"{split}.jsonl"))

    def identity(self) -> dict[str, Any]:
        from suite.tasks.lm_eval_scoring import lm_eval_version

        return {**super().identity(), "lm_eval": lm_eval_version(), "lm_eval_task": "gsm8k",
                "lm_eval_task_version": str(self._harness_config()["metadata"].get("version", ""))}

    def _gsm8k_rows(self, split: str) -> list[dict]:
        if self.data_dir:
            return read_gsm8k(self._file(f"{split}.jsonl"))
        return _hub_rows(HUB_GSM8K, "main", split)

    def _train_and_validation(self) -> tuple[list[dict], list[dict]]:
        """GSM8K train split in a fixed shuffled order: the first ``validation_rows`` validate."""
        rows = self._gsm8k_rows("train")
        order = list(range(len(rows)))
        random.Random(0).shuffle(order)
        cut = self.options.validation_rows
        if len(rows) <= cut:
            raise UserError(f"GSM8K train has {len(rows)} rows, too few to carve {cut} validation rows")
        return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        if split == "train":
            if self.options.train_data == "metamath":
                rows = [{"question": r["query"], "answer": r["response"]} for r in self._metamath_rows()]
            else:
                rows = self._train_and_validation()[0]
        elif split == "valid":
            rows = self._train_and_validation()[1]
        elif split == "test":
            rows = self._gsm8k_rows("test")
        else:
            raise UserError(f"GSM8K has no split '{split}'")
        rows = rows[:limit] if limit else rows
        return [{"id": i, "prompt": PROMPT.format(question=r["question"]), "answer": " " + r["answer"].strip(),
                 "target": final_answer(r["answer"])} for i, r in enumerate(rows)]

    def examples(self, split: str, limit: int | None = None) -> list[dict]:
        """The training split never holds the validation rows, so a selection view needs no carving."""
        return self.load(split, limit)

    def for_selection(self) -> Gsm8kTask:
        """Tuning scores the validation rows carved from GSM8K train, never the test set."""
        import copy

        view = copy.copy(self)
        view.selection = True
        view.eval_splits = ("valid",)
        return view

    def _metamath_rows(self) -> list[dict]:
        if self.data_dir:
            try:
                rows = json.loads(self._file(METAMATH_FILE).read_text(encoding=ENCODING))
            except UnicodeDecodeError:
                raise not_utf8(str(self._file(METAMATH_FILE))) from None
            except ValueError as exc:
                raise UserError(f"{self._file(METAMATH_FILE)} is not valid JSON: {exc}") from None
            if not isinstance(rows, list) or (rows and not {"query", "response"} <= set(rows[0])):
                raise UserError(f"{self._file(METAMATH_FILE)}: expected a list of objects with 'query' and "
                                f"'response' (MetaMathQA's layout)")
        else:
            rows = _hub_rows(HUB_METAMATH, None, "train")
        return [r for r in rows if len(r["query"]) + len(r["response"]) <= self.options.max_chars]

    # -- scoring through lm-eval --------------------------------------------------------------
    def _harness_config(self, test_file: str | None = None) -> dict:
        """lm-eval's installed ``gsm8k`` task with our prompt, and local files when ``--data-dir`` is set."""
        from suite.tasks.lm_eval_scoring import task_config

        overrides: dict[str, Any] = {"doc_to_text": PROMPT.replace("{question}", "{{question}}")}
        if self.data_dir or test_file:
            train = str(self._file("train.jsonl")) if self.data_dir else test_file
            overrides.update(dataset_path="json", dataset_name=None,
                             dataset_kwargs={"data_files": {"train": train, "test": test_file or
                                                            str(self._file("test.jsonl"))}})
        return task_config("gsm8k", overrides, builtin_folder="gsm8k")

    def _score(self, bundle: ModelBundle, recipe: Any, device: str, config: dict,
               limit: int | None) -> tuple[dict[str, float], Any]:
        import pandas as pd

        from suite.tasks.lm_eval_scoring import evaluate_in_memory

        model = bundle.model
        with evaluation_mode(model):
            (result,) = evaluate_in_memory(model, bundle.tokenizer, [config], device, batch_size=recipe.eval_batch_size,
                                           max_length=recipe.max_length + self.new_tokens,
                                           num_fewshot=self.options.few_shot, limit=limit,
                                           max_new_tokens=self.new_tokens,
                                           apply_chat_template=self.uses_chat_template(bundle.tokenizer),
                                           builtin_folder="gsm8k")
        by_doc: dict[int, dict] = {}
        for sample in result.samples:
            row = by_doc.setdefault(int(sample["doc_id"]), {"example_id": int(sample["doc_id"]),
                                                            "label": final_answer(sample["target"]),
                                                            "generated": sample["resps"][0][0]})
            row[sample["filter"]] = (str(sample["filtered_resps"][0]), float(sample["exact_match"]))
        records = pd.DataFrame([{
            "example_id": r["example_id"], "label": r["label"], "generated": r["generated"],
            "prediction": r.get(FLEXIBLE, ("", 0.0))[0], "correct": r.get(FLEXIBLE, ("", 0.0))[1],
            "prediction_strict": r.get(STRICT, ("", 0.0))[0], "correct_strict": r.get(STRICT, ("", 0.0))[1],
        } for r in sorted(by_doc.values(), key=lambda r: r["example_id"])])
        metrics = {"exact_match_strict": result.metrics.get(f"exact_match,{STRICT}", float("nan")),
                   "exact_match_flexible": result.metrics.get(f"exact_match,{FLEXIBLE}", float("nan"))}
        return metrics, records

    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        if self.selection:  # tuning: the validation rows, never the test set
            metrics, records = self._score_validation(bundle, recipe, device)
            split = "valid"
        else:
            metrics, records = self._score(bundle, recipe, device, self._harness_config(), recipe.limit)
            split = "test"
        records.insert(0, "split", split)
        out = EvalOutput([Metric(name, value, split=split, is_primary=name == self.primary_metric)
                          for name, value in metrics.items()], records)
        return self.with_general_metrics(out, bundle, recipe, device)

    def validate(self, bundle: ModelBundle, recipe: Any, device: str) -> dict[str, float]:
        """Exact match on the validation rows carved from train (the test set is never looked at)."""
        metrics, _ = self._score_validation(bundle, recipe, device)
        return {f"valid_{name}": value for name, value in metrics.items()}

    def _score_validation(self, bundle: ModelBundle, recipe: Any, device: str) -> tuple[dict[str, float], Any]:
        rows = self._train_and_validation()[1]
        with tempfile.TemporaryDirectory(prefix="suite-gsm8k-") as folder:
            path = os.path.join(folder, "valid.jsonl")
            with open(path, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")
            return self._score(bundle, recipe, device, self._harness_config(test_file=path), None)

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        # peft method_comparison: AdamW 1e-4, cosine, batch 4, max length 768.
        return {"lr": 1e-4, "schedule": "cosine", "batch_size": 4, "max_length": 768, "eval_batch_size": 16}


def final_answer(answer: str) -> str:
    """The number after GSM8K's ``####`` marker (commas dropped), or the text's last line."""
    text = str(answer)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().replace(",", "")
    return text.strip().splitlines()[-1].strip() if text.strip() else ""


def read_gsm8k(path: Path) -> list[dict]:
    """GSM8K rows of a jsonl file, every row checked: a row without its ``#### N`` final answer would
    make the target free text, so exact match is 0 for every method. Bad rows are counted, the first named."""
    rows: list[dict] = []
    bad, first = 0, ""
    with open_text(str(path)) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row, problem = _gsm8k_row(line)
            if problem:
                bad += 1
                first = first or f"line {number}: {problem}"
            else:
                rows.append(row)
    if bad:
        raise UserError(f"{path}, {first} ({bad} of {bad + len(rows)} rows are bad); each line must be a JSON "
                        f"object with string 'question' and 'answer', the answer ending in its '#### N' final "
                        f"answer as in the original GSM8K files: fix or remove the bad rows")
    if not rows:
        raise UserError(f"{path} holds no rows; expected GSM8K's jsonl, one {{\"question\", \"answer\"}} per line")
    return rows


def _gsm8k_row(line: str) -> tuple[dict, str]:
    """The row of one jsonl line, and what is wrong with it ("" when nothing)."""
    try:
        row = json.loads(line)
    except ValueError:
        return {}, "not valid JSON"
    if not isinstance(row, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(row), "a number")
        return {}, f"{kind}, not a JSON object"
    missing = [f for f in FIELDS if f not in row]
    if missing:
        return row, f"missing field(s) {', '.join(missing)}"
    wrong = [f for f in FIELDS if not isinstance(row[f], str)]
    if wrong:
        return row, f"field(s) {', '.join(wrong)} not text"
    if not FINAL_ANSWER.search(row["answer"]):
        return row, "the answer does not end in a '#### N' final answer"
    return row, ""


def _hub_rows(name: str, config: str | None, split: str) -> list[dict]:
    try:
        from datasets import load_dataset

        return list(load_dataset(name, config, split=split))
    except Exception as exc:
        raise UserError(f"cannot load {name} ({split}) from the hub ({type(exc).__name__}: {exc}). Offline? "
                        f"Pass --data-dir with the original files") from None
