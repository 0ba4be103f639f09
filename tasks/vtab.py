"""VTAB-1k: 19 visual tasks in three groups, 1,000 training images each, top-1 accuracy.

Zhai et al. 2019, A Large-scale Study of Representation Learning with the Visual Task
Adaptation Benchmark (arXiv:1910.04867), as the PEFT literature runs it (VPT, SSF, NOAH,
V-PETL Bench): per task, ``train800`` + ``val200`` to select hyperparameters, their union
``train800val200`` for the final fit, the full ``test`` split for the reported score.
``vtab:cifar`` is the final protocol; ``vtab:cifar@val200`` is the selection stage (see
``suite.tasks.families.image_classification``). Subtask names are V-PETL Bench's folder names
(``cifar``, ``oxford_flowers102``, ``oxford_iiit_pet``, ``diabetic_retinopathy``, ``kitti``,
...); the usual short names (``cifar100``, ``flowers102``, ``pets``, ``retinopathy``,
``kitti_dist``, ...) are accepted as aliases.

Data: with ``--data-dir``, a local folder in the layout V-PETL Bench publishes:
``<dir>/<task>/train800.txt``, ``val200.txt``, ``train800val200.txt``, ``test.txt``, each line
``relative/path label`` (the path relative to ``<dir>/<task>``, the label an integer class
id). Without it, the same layout comes from V-PETL Bench's archive on the hub
(``XiN0919/VTAB-1k``, file ``vtab-1k.zip``, about 4.7 GB), downloaded once and unpacked
under ``~/.cache/suite/vtab-1k/`` (``$XDG_CACHE_HOME`` if set).

Scores: top-1 accuracy per task. ``aggregate`` gives the VTAB-1k mean, the unweighted mean
over the 19 tasks, which is the figure VTAB and the PEFT tables report as "mean" (VPT's full
fine-tuning, with group means 75.88 / 83.36 / 47.64, is cited as 65.57: the 19-task mean,
not the 68.96 mean of the group means), then the Natural (7), Specialized (4) and Structured
(8) group means. Only final-protocol subtasks enter; a partial set is labelled as such.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from suite.errors import UnknownNameError, UserError
from suite.registry import register_task
from suite.task import Aggregate, mean_aggregate
from suite.tasks.families.image_classification import SELECTION_STAGE, OneKProtocolTask
from suite.tasks.text_files import open_text

HUB_DATASET = "XiN0919/VTAB-1k"  # V-PETL Bench's processed VTAB-1k (its README's download link)
HUB_FILE = "vtab-1k.zip"
LAYOUT_HINT = ("V-PETL Bench's layout: <data-dir>/<task>/train800.txt, val200.txt, train800val200.txt, "
               "test.txt, each line 'relative/path label'")


@dataclass(frozen=True)
class VtabSpec:
    group: str
    num_labels: int
    aliases: tuple[str, ...] = ()


# V-PETL Bench's folder names, in VTAB's order; class counts of the VTAB task definitions.
SPECS: dict[str, VtabSpec] = {
    "cifar": VtabSpec("Natural", 100, ("cifar100", "cifar_100")),
    "caltech101": VtabSpec("Natural", 102, ("caltech", "caltech_101")),
    "dtd": VtabSpec("Natural", 47, ("dtd47",)),
    "oxford_flowers102": VtabSpec("Natural", 102, ("flowers102", "flowers", "oxford_flowers")),
    "oxford_iiit_pet": VtabSpec("Natural", 37, ("pets", "pet", "oxford_pets")),
    "svhn": VtabSpec("Natural", 10, ("svhn_cropped",)),
    "sun397": VtabSpec("Natural", 397, ("sun",)),
    "patch_camelyon": VtabSpec("Specialized", 2, ("camelyon", "pcam", "patchcamelyon")),
    "eurosat": VtabSpec("Specialized", 10),
    "resisc45": VtabSpec("Specialized", 45, ("resisc",)),
    "diabetic_retinopathy": VtabSpec("Specialized", 5, ("retinopathy",)),
    "clevr_count": VtabSpec("Structured", 8, ("clevr_count_all",)),
    "clevr_dist": VtabSpec("Structured", 6, ("clevr_closest_object_distance",)),
    "dmlab": VtabSpec("Structured", 6),
    "kitti": VtabSpec("Structured", 4, ("kitti_dist", "kitti_closest_vehicle_distance")),
    "dsprites_loc": VtabSpec("Structured", 16, ("dsprites_location", "dsprites_label_x_position")),
    "dsprites_ori": VtabSpec("Structured", 16, ("dsprites_orientation", "dsprites_label_orientation")),
    "smallnorb_azi": VtabSpec("Structured", 18, ("smallnorb_azim", "smallnorb_azimuth", "snorb_azi", "snorb_azim")),
    "smallnorb_ele": VtabSpec("Structured", 9, ("smallnorb_elev", "smallnorb_elevation", "snorb_ele", "snorb_elev")),
}
ALIASES = {alias: name for name, spec in SPECS.items() for alias in spec.aliases}
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(name for name, spec in SPECS.items() if spec.group == group)
    for group in ("Natural", "Specialized", "Structured")
}
HEADLINE = "VTAB-1k mean"


def read_split_list(path: str, folder: str, num_labels: int) -> list[dict]:
    """One V-PETL list file -> examples ``{"id", "path", "label"}``; a bad line is named."""
    if not os.path.isfile(path):
        raise UserError(f"VTAB-1k split list not found: {path}. Expected {LAYOUT_HINT}")
    examples: list[dict] = []
    with open_text(path) as fh:  # UTF-8 with or without a byte-order mark, LF or CRLF
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise UserError(f"{path}, line {number}: expected 'relative/path label', got {line!r}")
            relative, raw = parts
            try:
                label = int(raw)
            except ValueError:
                raise UserError(f"{path}, line {number}: label {raw!r} is not an integer class id") from None
            if not 0 <= label < num_labels:
                raise UserError(f"{path}, line {number}: label {label} is outside 0..{num_labels - 1} "
                                f"(this task has {num_labels} classes)")
            examples.append({"id": len(examples), "path": os.path.join(folder, relative), "label": label})
    if not examples:
        raise UserError(f"{path} lists no images")
    return examples


def missing_files(examples: list[dict]) -> list[str]:
    return [e["path"] for e in examples if not os.path.isfile(e["path"])]


@register_task("vtab", kind="image-classification",
               summary="VTAB-1k: 19 tasks in 3 groups, 1,000 training images each; top-1, group means",
               paper="Zhai et al. 2019, VTAB (arXiv:1910.04867)")
class VtabTask(OneKProtocolTask):
    family = "vtab"
    subtasks: ClassVar[tuple[str, ...]] = tuple(SPECS)

    def __init__(self, subtask: str | None = None, data_dir: str | None = None, options: Any = None):
        super().__init__(subtask, data_dir, options)
        base = self.canonical_base(self.variant.base)
        self.spec = SPECS[base]
        self.canonical = base
        self.num_labels = self.spec.num_labels

    @classmethod
    def canonical_base(cls, base: str) -> str:
        key = base.strip().lower().replace("-", "_")
        if key in SPECS:
            return key
        if key in ALIASES:
            return ALIASES[key]
        raise UnknownNameError("VTAB-1k subtask", base, (*SPECS, *ALIASES),
                               hint=f"Add @{SELECTION_STAGE} to train on train800 and score val200.")

    # -- where the data is ------------------------------------------------------------------------
    def data_source(self) -> str:
        return f"dir:{os.path.abspath(self.data_dir)}" if self.data_dir else f"hub:{HUB_DATASET}"

    def root(self) -> str:
        if self.data_dir:
            if not os.path.isdir(self.data_dir):
                raise UserError(f"--data-dir '{self.data_dir}' does not exist")
            return self.data_dir
        return hub_root()

    def folder(self) -> str:
        root = self.root()
        for name in (self.canonical, *self.spec.aliases):
            candidate = os.path.join(root, name)
            if os.path.isdir(candidate):
                return candidate
        tried = ", ".join(self.spec.aliases)
        raise UserError(f"VTAB-1k {self.canonical}: no folder {os.path.join(root, self.canonical)}"
                        f"{f' (nor {tried})' if tried else ''}. Expected {LAYOUT_HINT}")

    def check_data(self) -> None:
        """The stage's two lists exist and parse, and every image they list is there."""
        for name in (self.variant.train_list, self.variant.eval_list):
            self.examples_of(name)

    def list_examples(self, list_name: str) -> list[dict]:
        folder = self.folder()
        examples = read_split_list(os.path.join(folder, f"{list_name}.txt"), folder, self.num_labels)
        missing = missing_files(examples)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise UserError(f"VTAB-1k {self.canonical}: {len(missing)} image(s) listed in {list_name}.txt "
                            f"are missing: {shown}")
        return examples

    # -- scores -------------------------------------------------------------------------------------
    @classmethod
    def aggregate(cls, scores: Mapping[str, float]) -> list[Aggregate]:
        """The VTAB-1k mean over the 19 tasks (headline), then the Natural, Specialized and
        Structured means. Selection variants (``@val200``) are not members, so never enter."""
        overall = mean_aggregate(HEADLINE, cls.subtasks, scores)
        groups = [a for name, members in GROUPS.items() for a in mean_aggregate(name, members, scores)]
        return overall + groups


@lru_cache(maxsize=1)
def hub_root() -> str:
    """V-PETL Bench's archive from the hub, unpacked once into the cache; the folder holding the tasks."""
    try:
        from huggingface_hub import hf_hub_download

        archive = hf_hub_download(HUB_DATASET, HUB_FILE, repo_type="dataset")
    except Exception as exc:  # noqa: BLE001 - offline, missing, or refused: one message either way
        raise UserError(f"cannot fetch VTAB-1k from the hub ({HUB_DATASET}, {HUB_FILE}: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}). Offline? Pass --data-dir with "
                        f"{LAYOUT_HINT}") from None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "suite" / "vtab-1k"
    target = cache / Path(archive).resolve().name  # the blob's hash: a new archive unpacks anew
    if not (target / ".complete").exists():
        _unpack(archive, target)
    return find_tasks_root(str(target))


def _unpack(archive: str, target: Path) -> None:
    """Unpack into a temporary sibling, then move into place, so a killed run leaves no half folder."""
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch)
        (scratch / ".complete").touch()
        try:
            os.replace(scratch, target)
        except OSError:  # another process unpacked it first
            if not (target / ".complete").exists():
                raise
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot unpack {archive} into {target}: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def find_tasks_root(folder: str, depth: int = 3) -> str:
    """The folder (``folder`` or one below, up to ``depth`` levels) that holds VTAB task folders."""
    names = (*SPECS, *ALIASES)
    frontier = [folder]
    for _ in range(depth + 1):
        for candidate in frontier:
            if any(os.path.isfile(os.path.join(candidate, n, "train800.txt")) for n in names):
                return candidate
        frontier = [os.path.join(c, d) for c in frontier for d in sorted(os.listdir(c))
                    if os.path.isdir(os.path.join(c, d)) and not d.startswith(".")]
    raise UserError(f"{folder} holds no VTAB-1k task folders; expected {LAYOUT_HINT}")
