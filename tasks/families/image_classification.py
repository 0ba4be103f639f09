"""Image classification: the family base of VTAB-1k and image-folder tasks.

Examples are dicts ``{"id", "image", "label"}`` where ``image`` is a PIL image or an
``H x W x C`` uint8 array, or ``{"id", "path", "label"}`` for an image file decoded when it
is used (training images once, evaluation images batch by batch, so a large test split
never sits in memory). The model's own image processor (resize, rescale, normalise) runs
in ``collate``, so batches carry ``pixel_values`` as the model expects. The classification
head is the one module the task adds (the bundle's ``new_modules``). Evaluation is top-1
accuracy with per-example records.

An image file that does not decode stops the cell with a message naming it, or, with the
task option ``bad_images=skip`` (``--bad-images skip``), is left out and counted: every
evaluation then stores ``skipped_images`` per split (``train`` included), so nothing is
dropped silently.

``OneKProtocolTask`` is VTAB-1k's protocol, shared by ``vtab`` and ``images``: 800 training
and 200 validation images for selecting hyperparameters, their union of 1,000 for the
final fit, and the test split for the reported score. Which of the two a cell runs is in
its subtask name: ``cifar`` fits on ``train800val200`` and scores ``test``;
``cifar@val200`` fits on ``train800`` and scores ``val200``. The stage is in the subtask
(not an option) so that it is stored in the results' ``subtask`` column, enters the cell
id, and keeps the two kinds of score apart in every table and aggregate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from suite.config import option
from suite.errors import UnknownNameError, UserError
from suite.metrics import ACCURACY, MetricSpec
from suite.task import EvalOutput, Metric, ModelBundle, Task, in_batches

# ViT-B/16 pre-trained on ImageNet-21k: the backbone of VTAB-1k's PEFT tables (VPT, SSF, V-PETL Bench).
DEFAULT_VISION_MODEL = "google/vit-base-patch16-224-in21k"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# stage -> (the list a cell trains on, the list it scores): VTAB-1k's split names.
STAGES: dict[str, tuple[str, str]] = {"test": ("train800val200", "test"), "val200": ("train800", "val200")}
SELECTION_STAGE = "val200"
PROCESS_CHUNK = 64  # images decoded and processed at a time when the training split is prepared


@dataclass(frozen=True)
class ImageOptions:
    """Task options of the image tasks (``--bad-images skip``); they enter the cell id."""

    bad_images: Literal["fail", "skip"] = option("fail", "an image that does not decode: stop the cell (fail), "
                                                         "or leave it out and count it (skip)")


@dataclass(frozen=True)
class Variant:
    """A subtask name with its protocol stage: ``cifar`` (final fit, test) or ``cifar@val200`` (selection)."""

    base: str
    stage: str = "test"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """Split a trailing ``@val200`` or ``@test``; any other text is the base name (never raises)."""
        head, sep, tail = text.rpartition("@")
        if sep and head and tail in STAGES:
            return cls(head, tail)
        return cls(text)

    def __str__(self) -> str:
        return self.base if self.stage == "test" else f"{self.base}@{self.stage}"

    @property
    def train_list(self) -> str:
        return STAGES[self.stage][0]

    @property
    def eval_list(self) -> str:
        return STAGES[self.stage][1]


def open_image(path: str) -> Any:
    """Decode an image file into an RGB PIL image (fully read, so a truncated file fails here)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class ImageClassificationTask(Task):
    """A task whose model is a vision backbone with an image-classification head."""

    objective = "image-classification"
    primary_metric = "accuracy"
    metrics = (ACCURACY, MetricSpec("skipped_images", "skipped images", higher_is_better=False, format="count",
                                    summary="images that did not decode, left out (--bad-images skip)"))
    num_labels: int = 2
    carves_validation = True

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from suite.models.loading import classification_head, load_model, model_family

        loaded = load_model(model_name, "image-classification", task=self.name,
                            config={"num_labels": self.num_labels},
                            pretrained={"num_labels": self.num_labels, "ignore_mismatched_sizes": True})
        return ModelBundle(model=loaded.model, processor=loaded.processor,
                           new_modules=classification_head(loaded.model), family=model_family(loaded.model),
                           name=model_name)

    # -- data ---------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list[dict]:
        """Examples ``{"id", "image" or "path", "label"}`` of a split, at most ``limit``."""
        raise NotImplementedError

    @property
    def skips_bad_images(self) -> bool:
        return getattr(self.options, "bad_images", "fail") == "skip"  # only the image tasks' options have it

    def image_of(self, example: dict, split: str, skipped: list[str]) -> Any:
        """The example's image; a file is decoded here. An undecodable file is a UserError naming it,
        or, when the task skips bad images, is appended to ``skipped`` and None comes back."""
        if "image" in example:
            return example["image"]
        path = example["path"]
        try:
            return open_image(path)
        except FileNotFoundError:
            raise UserError(f"{self.name}: image not found: {path} (listed in split '{split}')") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a broken file
            if self.skips_bad_images:
                skipped.append(path)
                return None
            raise UserError(f"{self.name}: image {path} (split '{split}') cannot be decoded "
                            f"({type(exc).__name__}: {exc}). Replace or remove it, or run with --bad-images skip "
                            f"to leave such images out (their count is stored as the metric skipped_images)"
                            ) from None

    def train_data(self, bundle: ModelBundle, recipe: Any) -> list[dict]:
        """The training split through the image processor once: ``{"id", "pixel_values", "label"}``.

        The protocol has no augmentation, so every epoch would compute the same tensors; doing
        it once keeps the processor out of the training loop (about 0.6 MB per image at 224 px).
        """
        skipped: list[str] = []
        out = []
        examples = self.examples("train", recipe.limit)
        for start in range(0, len(examples), PROCESS_CHUNK):
            kept, images = [], []
            for example in examples[start:start + PROCESS_CHUNK]:
                image = self.image_of(example, "train", skipped)
                if image is not None:
                    kept.append(example)
                    images.append(_rgb(image))
            if images:
                pixels = bundle.processor(images=images, return_tensors="pt")["pixel_values"]
                out += [{"id": e["id"], "pixel_values": p, "label": e["label"]}
                        for e, p in zip(kept, pixels, strict=True)]
        self.train_skipped = skipped
        _report_skipped(self.name, "train", skipped)
        if not out:
            raise UserError(f"{self.name}: no training image could be decoded")
        return out

    def collate(self, items: list[dict], bundle: ModelBundle) -> dict:
        """A batch from processed items (``pixel_values``) or raw ones (``image``, through the processor)."""
        import torch

        if "pixel_values" in items[0]:
            pixels = torch.stack([it["pixel_values"] for it in items])
        else:
            pixels = bundle.processor(images=[_rgb(it["image"]) for it in items], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": torch.tensor([int(it["label"]) for it in items])}

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        """Top-1 accuracy per split; with ``--bad-images skip``, the images left out of training too."""
        out = super().evaluate(bundle, recipe, device)
        if self.skips_bad_images:
            out.metrics.append(Metric("skipped_images", float(len(getattr(self, "train_skipped", []))), split="train",
                                      higher_is_better=False))
        return out

    def evaluate_split(self, bundle: ModelBundle, recipe: Any, device: str, split: str) -> tuple[list[Metric], Any]:
        import pandas as pd

        skipped: list[str] = []
        kept: list[dict] = []
        predictions: list[int] = []
        for chunk in in_batches(self.examples(split, recipe.limit), recipe.eval_batch_size):
            items = []
            for example in chunk:
                image = self.image_of(example, split, skipped)
                if image is not None:
                    items.append({**example, "image": image})
            if not items:
                continue
            batch = self.collate(items, bundle)
            logits = bundle.model(pixel_values=batch["pixel_values"].to(device)).logits.float()
            predictions += logits.argmax(-1).cpu().tolist()
            kept += items
        _report_skipped(self.name, split, skipped)
        if not kept:
            raise UserError(f"{self.name}: no image of split '{split}' could be decoded")
        labels = [int(e["label"]) for e in kept]
        correct = [float(p == g) for p, g in zip(predictions, labels, strict=True)]
        metrics = [Metric("accuracy", sum(correct) / len(correct))]
        if self.skips_bad_images:
            metrics.append(Metric("skipped_images", float(len(skipped)), higher_is_better=False))
        frame = {"split": split, "example_id": [e["id"] for e in kept], "prediction": predictions,
                 "label": labels, "correct": correct}
        if "path" in kept[0]:
            frame["path"] = [e.get("path", "") for e in kept]
        return metrics, pd.DataFrame(frame)


class OneKProtocolTask(ImageClassificationTask):
    """VTAB-1k's protocol: ``train800`` / ``val200`` for selection, ``train800val200`` for the final
    fit, ``test`` for the reported score (see the module docstring for how a subtask names its stage).

    Subclasses list the examples of each of the four lists (``list_examples``); this base picks
    the two lists of the cell's stage, caches them, and owns the subtask grammar.
    """

    Options: ClassVar[type] = ImageOptions
    default_model = DEFAULT_VISION_MODEL

    def __init__(self, subtask: str | None = None, data_dir: str | None = None, options: Any = None):
        super().__init__(subtask, data_dir, options)
        self.variant = Variant.parse(self.subtask)
        self.eval_splits = (self.variant.eval_list,)
        self._lists: dict[str, list[dict]] = {}

    # -- the subtask grammar (the sweep asks the family to resolve what the user typed) --------------
    @classmethod
    def canonical_base(cls, base: str) -> str:
        """The family's own name for a subtask's base (aliases resolved); UserError when unknown."""
        if base not in cls.subtasks:
            raise UnknownNameError(f"{cls.family} subtask", base, cls.subtasks,
                                   hint=f"Add @{SELECTION_STAGE} to train on train800 and score val200.")
        return base

    @classmethod
    def resolve_subtask(cls, text: str) -> str:
        """The canonical subtask for what the user typed (``cifar100`` -> ``cifar``, ``dtd@val200``)."""
        variant = Variant.parse(text.strip())
        return str(replace(variant, base=cls.canonical_base(variant.base)))

    @classmethod
    def selection_subtask(cls, subtask: str) -> str:
        """The subtask that trains on train800 and scores val200: where hyperparameters are selected
        (VTAB's rule), never on the test split the leaderboard reports."""
        return str(replace(Variant.parse(subtask), stage=SELECTION_STAGE))

    def for_selection(self) -> Task:
        """The protocol's own selection stage: train800, scored on val200."""
        view = type(self)(subtask=self.selection_subtask(self.subtask), data_dir=self.data_dir,
                          options=self.options)
        view.selection = True
        return view

    @classmethod
    def subtask_order(cls, subtasks: Any) -> list[str]:
        """The family's order; a selection variant right after its final subtask."""
        rank = {s: i for i, s in enumerate(cls.subtasks)}

        def key(name: str) -> tuple:
            variant = Variant.parse(name)
            return rank.get(variant.base, len(rank)), variant.base, variant.stage != "test", name

        return sorted(subtasks, key=key)

    # -- data -----------------------------------------------------------------------------------
    def list_examples(self, list_name: str) -> list[dict]:
        """Examples ``{"id", "path", "label"}`` of ``train800``, ``val200``, ``train800val200`` or ``test``;
        a UserError naming whatever is missing."""
        raise NotImplementedError

    def examples_of(self, list_name: str) -> list[dict]:
        if list_name not in self._lists:
            self._lists[list_name] = self.list_examples(list_name)
        return self._lists[list_name]

    def load(self, split: str, limit: int | None = None) -> list[dict]:
        if split == "train":
            name = self.variant.train_list
        elif split == self.variant.eval_list:
            name = split
        else:
            raise UserError(f"{self.name} has no evaluation split '{split}': it trains on "
                            f"{self.variant.train_list} and scores {self.variant.eval_list}")
        examples = self.examples_of(name)
        return examples[:limit] if limit else examples

    def default_recipe(self, model_family: str) -> dict[str, Any]:
        # V-PETL Bench's shared VTAB-1k settings (its training scripts and per-task configs):
        # AdamW at 1e-3 with weight decay 1e-4, batch 64, 100 epochs, cosine decay after 10
        # warm-up epochs. A method's recommended learning rate still overrides the 1e-3.
        return {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "epochs": 100.0, "schedule": "cosine",
                "warmup_ratio": 0.1}


def _report_skipped(task: str, split: str, skipped: list[str]) -> None:
    """Name the images left out (the count is also stored as a metric)."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"suite: {task}: skipped {len(skipped)} undecodable image(s) in split '{split}': {shown}",
              file=sys.stderr)


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
