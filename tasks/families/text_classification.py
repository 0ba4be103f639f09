"""Sentence and sentence-pair classification/regression: the family base GLUE and smoke share.

Examples are dicts ``{"id", "text_a", "text_b", "label"}``. Text is tokenised once per
split and padded per batch, so the training loop spends its time in the model. The
classification head is the one module the task adds: it is the bundle's ``new_modules``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from suite.metrics import ACCURACY, score
from suite.task import Metric, ModelBundle, Task, in_batches
from suite.tasks.glue_metrics import METRIC_FUNCTIONS


class TextClassificationTask(Task):
    """A task whose model is an encoder (or decoder) with a sequence-classification head."""

    carves_validation = True

    num_labels: int = 2
    metric_names: tuple[str, ...] = ("accuracy",)
    metrics = (ACCURACY, score("f1", "F1"), score("mcc", "Matthews correlation"), score("pearson", "Pearson r"),
               score("spearman", "Spearman rho"))
    tiny_words: ClassVar[tuple[str, ...]] = ()

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from suite.models.loading import classification_head, load_model, model_family

        problem = "regression" if self.objective == "regression" else "single_label_classification"
        labels = {"num_labels": 1 if self.objective == "regression" else self.num_labels, "problem_type": problem}
        loaded = load_model(model_name, "sequence-classification", task=self.name, words=self.tiny_words,
                            config=labels, pretrained=labels)
        model, tokenizer = loaded.model, loaded.processor
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return ModelBundle(model=model, processor=tokenizer, new_modules=classification_head(model),
                           family=model_family(model), name=model_name)

    # -- data ---------------------------------------------------------------------------------
    def train_data(self, bundle: ModelBundle, recipe: Any) -> list[dict]:
        return self.tokenize(self.examples("train", recipe.limit), bundle, recipe.max_length)

    def tokenize(self, examples: list[dict], bundle: ModelBundle, max_length: int) -> list[dict]:
        """Tokenise a split once; each item keeps its id and label."""
        texts_a = [e["text_a"] for e in examples]
        pair = any(e.get("text_b") is not None for e in examples)
        texts_b = [e.get("text_b") or "" for e in examples] if pair else None
        enc = bundle.tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [
            {**{k: enc[k][i] for k in keys}, "labels": e["label"], "example_id": e["id"]}
            for i, e in enumerate(examples)
        ]

    def collate(self, items: list[dict], bundle: ModelBundle) -> dict:
        import torch

        pad_id = bundle.tokenizer.pad_token_id or 0
        width = max(len(it["input_ids"]) for it in items)
        batch: dict[str, Any] = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key not in items[0]:
                continue
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.tensor([it[key] + [fill] * (width - len(it[key])) for it in items])
        dtype = torch.float32 if self.objective == "regression" else torch.long
        batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=dtype)
        return batch

    # -- evaluation ---------------------------------------------------------------------------
    def score(self, predictions: list, labels: list) -> dict[str, float]:
        return {name: METRIC_FUNCTIONS[name](predictions, labels) for name in self.metric_names}

    def evaluate_split(self, bundle: ModelBundle, recipe: Any, device: str, split: str) -> tuple[list[Metric], Any]:
        import pandas as pd

        items = self.tokenize(self.examples(split, recipe.limit), bundle, recipe.max_length)
        preds: list = []
        for chunk in in_batches(items, recipe.eval_batch_size):
            batch = self.collate(chunk, bundle)
            batch.pop("labels")
            logits = bundle.model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            if self.objective == "regression":
                preds.extend(logits.squeeze(-1).cpu().tolist())
            else:
                preds.extend(logits.argmax(-1).cpu().tolist())
        labels = [it["labels"] for it in items]
        metrics = [Metric(name, float(value)) for name, value in self.score(preds, labels).items()]
        correct = ([-abs(p - g) for p, g in zip(preds, labels, strict=True)] if self.objective == "regression"
                   else [float(p == g) for p, g in zip(preds, labels, strict=True)])
        return metrics, pd.DataFrame({
            "split": split, "example_id": [it["example_id"] for it in items],
            "prediction": [float(p) for p in preds], "label": [float(g) for g in labels], "correct": correct,
        })
