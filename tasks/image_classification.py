"""Image classification: the family base of VTAB-1k and image-folder tasks.

Examples are dicts ``{"id", "image", "label"}`` where ``image`` is a PIL image or an
``H x W x C`` uint8 array. The model's own image processor (resize, rescale, normalise)
runs in ``collate``, so batches carry ``pixel_values`` as the model expects. The
classification head is the one module the task adds (the bundle's ``new_modules``).
Evaluation is top-1 accuracy with per-example records.
"""

from __future__ import annotations

from typing import Any

from suite.errors import UserError
from suite.modeling import TINY_MODELS, resolve_model_path
from suite.task import EvalOutput, Metric, ModelBundle, Task
from suite.tasks.heads import classification_head


class ImageClassificationTask(Task):
    """A task whose model is a vision backbone with an image-classification head."""

    objective = "image-classification"
    primary_metric = "accuracy"
    num_labels: int = 2

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from suite.modeling import model_family, tiny_config, tiny_image_processor

        if model_name in TINY_MODELS:
            config = tiny_config(model_name, vocab_size=1, num_labels=self.num_labels)
            try:
                model = AutoModelForImageClassification.from_config(config)
            except ValueError:
                raise UserError(f"'{model_name}' is not a vision model; use tiny-vit or a vision backbone "
                                f"for task '{self.name}'") from None
            processor = tiny_image_processor()
        else:
            path = resolve_model_path(model_name)
            try:
                processor = AutoImageProcessor.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise UserError(f"model '{model_name}' has no image processor ({exc}); task '{self.name}' "
                                f"needs a vision model whose folder holds preprocessor_config.json") from None
            try:
                model = AutoModelForImageClassification.from_pretrained(
                    path, num_labels=self.num_labels, ignore_mismatched_sizes=True)
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot load '{model_name}' as an image classifier: {exc}") from None
        return ModelBundle(model=model, processor=processor, new_modules=classification_head(model),
                           family=model_family(model), name=model_name)

    # -- data ---------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list[dict]:
        """Examples ``{"id", "image", "label"}`` of a split, at most ``limit``."""
        raise NotImplementedError

    def train_data(self, bundle: ModelBundle, recipe: Any) -> list[dict]:
        return self.load("train", recipe.limit)

    def collate(self, items: list[dict], bundle: ModelBundle) -> dict:
        import torch

        pixels = bundle.processor(images=[_rgb(it["image"]) for it in items], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([int(it["label"]) for it in items])}

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        import pandas as pd
        import torch

        model = bundle.model
        was_training = model.training
        model.eval()
        metrics: list[Metric] = []
        frames = []
        for split in self.eval_splits:
            examples = self.load(split, recipe.limit)
            predictions: list[int] = []
            with torch.no_grad():
                for start in range(0, len(examples), recipe.eval_batch_size):
                    batch = self.collate(examples[start:start + recipe.eval_batch_size], bundle)
                    logits = model(pixel_values=batch["pixel_values"].to(device)).logits.float()
                    predictions += logits.argmax(-1).cpu().tolist()
            labels = [int(e["label"]) for e in examples]
            correct = [float(p == g) for p, g in zip(predictions, labels, strict=True)]
            metrics.append(Metric("accuracy", sum(correct) / len(correct), split=split,
                                  is_primary=split == self.eval_splits[0]))
            frames.append(pd.DataFrame({"split": split, "example_id": [e["id"] for e in examples],
                                        "prediction": predictions, "label": labels, "correct": correct}))
        if was_training:
            model.train()
        return EvalOutput(metrics=metrics, records=pd.concat(frames, ignore_index=True))


def _rgb(image: Any) -> Any:
    """A PIL image in RGB, from a PIL image of any mode or an H x W (x C) uint8 array."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")
