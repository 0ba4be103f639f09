"""Your own images under VTAB-1k's protocol: ``--tasks images:<dir>``, a folder per class.

``<dir>/<class>/**/<image>``: every sub-folder of ``<dir>`` is a class (labels in sorted
order of the folder names), every image file below it (``.png``, ``.jpg``, ...) an example.
The splits follow VTAB-1k: with a fixed seed (the same for every cell, whatever its seed),
800 images train and 200 validate for selection, their 1,000 are the final fit, and all
the others are the test split; the folder needs more than 1,000 images for that.
Otherwise, or to fix the splits yourself, put a split file ``<dir>/split.txt`` beside the
class folders: one line per image, ``<class>/<file> train|val|test`` (train = train800,
val = val200, train + val = the final fit; any sizes). Images it does not list are not used.

``images:<dir>`` is the final protocol (fit on 1,000, score test); ``images:<dir>@val200``
the selection stage, as for ``vtab``. The folder's path is the subtask, as given on the
command line; the data source stored with each result is its absolute path.
"""

from __future__ import annotations

import os
import random
from functools import cached_property
from typing import Any

from suite.errors import UserError
from suite.registry import register_task
from suite.tasks.families.image_classification import IMAGE_SUFFIXES, OneKProtocolTask
from suite.tasks.text_files import open_text

SPLIT_FILE = "split.txt"
SPLIT_SEED = 0  # one split for every cell, independent of the cell's seed
SIZES = {"train800": 800, "val200": 200}
SPLIT_WORDS = {"train": "train800", "val": "val200", "test": "test"}


@register_task("images", kind="image-classification",
               summary="your own image folder (a folder per class) under the VTAB-1k protocol: images:<dir>")
class ImageFolderTask(OneKProtocolTask):
    family = "images"

    def __init__(self, subtask: str | None = None, data_dir: str | None = None, options: Any = None):
        if not subtask:
            raise UserError("task 'images' needs a folder of images, a sub-folder per class: "
                            "--tasks images:path/to/folder")
        super().__init__(subtask, data_dir, options)

    @classmethod
    def canonical_base(cls, base: str) -> str:
        path = os.path.normpath(os.path.expanduser(base.strip()))
        if not os.path.isdir(path):
            raise UserError(f"images:{base}: no such folder; give a folder with a sub-folder per class")
        return path

    @property
    def folder(self) -> str:
        return os.path.abspath(os.path.expanduser(self.variant.base))

    def data_source(self) -> str:
        return f"dir:{self.folder}"

    # -- the folder ---------------------------------------------------------------------------------
    @cached_property
    def classes(self) -> list[str]:
        if not os.path.isdir(self.folder):
            raise UserError(f"{self.name}: folder {self.folder} does not exist")
        names = sorted(d for d in os.listdir(self.folder)
                       if os.path.isdir(os.path.join(self.folder, d)) and not d.startswith("."))
        if len(names) < 2:
            raise UserError(f"{self.name}: {self.folder} has {len(names)} class folder(s); image classification "
                            f"needs a sub-folder per class, at least two")
        return names

    @property
    def num_labels(self) -> int:  # type: ignore[override]  # read from the folder, not fixed
        return len(self.classes)

    @cached_property
    def images(self) -> dict[str, int]:
        """Every image file (path relative to the folder, '/'-separated) -> its class id, sorted by path."""
        found: dict[str, int] = {}
        for label, name in enumerate(self.classes):
            for parent, dirs, files in os.walk(os.path.join(self.folder, name)):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in sorted(files):
                    if file.lower().endswith(IMAGE_SUFFIXES) and not file.startswith("."):
                        path = os.path.relpath(os.path.join(parent, file), self.folder)
                        found[path.replace(os.sep, "/")] = label
        empty = [n for i, n in enumerate(self.classes) if i not in set(found.values())]
        if empty:
            raise UserError(f"{self.name}: class folder(s) without images: {', '.join(empty)} "
                            f"(image files end in {', '.join(IMAGE_SUFFIXES)})")
        return dict(sorted(found.items()))

    @cached_property
    def assignment(self) -> dict[str, list[str]]:
        """VTAB list name -> relative paths, from the split file or the seeded 800 / 200 / rest draw."""
        split_file = os.path.join(self.folder, SPLIT_FILE)
        if os.path.isfile(split_file):
            parts = self._read_split_file(split_file)
        else:
            paths = list(self.images)
            needed = SIZES["train800"] + SIZES["val200"]
            if len(paths) <= needed:
                raise UserError(f"{self.name}: {len(paths)} images; the 1k protocol trains on {needed} and tests "
                                f"on the rest, so it needs more than {needed}. Add a split file {split_file} "
                                f"('<class>/<file> train|val|test' per line) to choose the splits yourself")
            random.Random(SPLIT_SEED).shuffle(paths)
            parts = {"train800": paths[:SIZES["train800"]], "val200": paths[SIZES["train800"]:needed],
                     "test": paths[needed:]}
        parts["train800val200"] = parts["train800"] + parts["val200"]
        return parts

    def _read_split_file(self, path: str) -> dict[str, list[str]]:
        parts: dict[str, list[str]] = {name: [] for name in SPLIT_WORDS.values()}
        seen: set[str] = set()
        with open_text(path) as fh:  # UTF-8 with or without a byte-order mark, LF or CRLF
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                pieces = line.rsplit(None, 1)
                if len(pieces) != 2 or pieces[1] not in SPLIT_WORDS:
                    raise UserError(f"{path}, line {number}: expected '<class>/<file> train|val|test', got {line!r}")
                relative = os.path.normpath(pieces[0]).replace(os.sep, "/")
                if relative not in self.images:
                    where = os.path.join(self.folder, relative)
                    reason = "is not there" if not os.path.exists(where) else "is not an image in a class folder"
                    raise UserError(f"{path}, line {number}: {where} {reason}")
                if relative in seen:
                    raise UserError(f"{path}, line {number}: {relative} is listed twice")
                seen.add(relative)
                parts[SPLIT_WORDS[pieces[1]]].append(relative)
        empty = [word for word, name in SPLIT_WORDS.items() if not parts[name]]
        if empty:
            raise UserError(f"{path} assigns no image to {', '.join(empty)}")
        return parts

    def check_data(self) -> None:
        for name in (self.variant.train_list, self.variant.eval_list):
            self.examples_of(name)

    def list_examples(self, list_name: str) -> list[dict]:
        return [{"id": i, "path": os.path.join(self.folder, relative), "label": self.images[relative]}
                for i, relative in enumerate(self.assignment[list_name])]
