"""VTAB-1k, image folders under its protocol, and the vision PEFT methods (VPT, Houlsby, AdaptFormer).

Everything runs offline: a tiny ViT built from a config, images generated here in V-PETL
Bench's VTAB-1k layout (``<dir>/<task>/images/...`` plus ``train800.txt``, ``val200.txt``,
``train800val200.txt``, ``test.txt``), and scikit-learn's bundled digits (1,797 real 8x8
images) written as a folder per class and as a VTAB task.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.app.cli import main
from suite.app.sweep import parse_task_list
from suite.errors import UnknownNameError, UserError
from suite.method import MethodContext, MethodTarget
from suite.models.catalog import CATALOG
from suite.models.loading import model_config
from suite.recipe import Recipe
from suite.registry import METHODS, TASKS
from suite.reports import stats
from suite.results.store import ResultStore
from suite.task import ModelBundle
from suite.tasks import vtab as vtab_module
from suite.tasks.images import ImageFolderTask
from suite.tasks.vtab import GROUPS, HEADLINE, VtabTask

LIST_FOLDERS = {"train800": "train", "val200": "val", "test": "test"}
SMALL = {"train800": 12, "val200": 6, "test": 10}
# Every vision method of the issue, and a few more of the peft tuners that apply to ViTs
# (tests/test_conformance.py runs all of them on tiny-vit).
VISION_METHODS = ["linear-probe", "full", "lora", "dora", "ia3", "loha", "ssf", "bitfit", "vpt", "vpt:deep=false",
                  "houlsby", "adaptformer"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- data written here ------------------------------------------------------------------------------


def band_image(rng: np.random.Generator, label: int, n_classes: int, size: int = 16) -> np.ndarray:
    """Noise with a bright vertical band whose position gives the class."""
    image = rng.integers(0, 60, size=(size, size, 3))
    width = max(1, size // n_classes)
    image[:, label * width:(label + 1) * width] += 180
    return image.astype(np.uint8)


def write_vtab_task(root: Path, task: str, n_classes: int = 2, sizes: dict | None = None, seed: int = 0) -> Path:
    """One task folder in V-PETL Bench's layout, images under images/{train,val,test}/."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / task
    lines: dict[str, list[str]] = {}
    for list_name, count in (sizes or SMALL).items():
        sub = folder / "images" / LIST_FOLDERS[list_name]
        sub.mkdir(parents=True, exist_ok=True)
        lines[list_name] = []
        for i in range(count):
            label = i % n_classes
            Image.fromarray(band_image(rng, label, n_classes)).save(sub / f"{i:06d}.png")
            lines[list_name].append(f"images/{LIST_FOLDERS[list_name]}/{i:06d}.png {label}")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for name, rows in lines.items():
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def vtab_dir(tmp_path) -> Path:
    root = tmp_path / "vtab-1k"
    write_vtab_task(root, "patch_camelyon")
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """scikit-learn's digits as PNG files, a folder per class: (folder, images, labels)."""
    from PIL import Image

    load_digits = pytest.importorskip("sklearn.datasets").load_digits  # real images, bundled with scikit-learn
    data = load_digits()
    images = (data.images * 255 / 16).round().astype(np.uint8)
    root = tmp_path_factory.mktemp("digits") / "digits"
    for i, (image, label) in enumerate(zip(images, data.target, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(root / str(label) / f"{i:04d}.png")
    return root, images, data.target


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main(["run", "--no-progress", *args])
    return code, capsys.readouterr().err


def primary(store: Path) -> dict[tuple[str, str], float]:
    frame = ResultStore(store).load()
    frame = frame[frame["is_primary"].astype(bool)]
    return {(r.variant, r.subtask): float(r.value) for r in frame.itertuples()}


# -- the task family: names, splits, stages ------------------------------------------------------------


def test_vtab_expands_to_19_tasks_in_three_groups_with_v_petl_names_and_aliases():
    tasks = parse_task_list("vtab")
    assert len(tasks) == 19 and {f for f, _ in tasks} == {"vtab"}
    assert [len(m) for m in GROUPS.values()] == [7, 4, 8]
    assert sum(GROUPS.values(), ()) == VtabTask.subtasks
    assert parse_task_list("vtab:cifar100,dtd") == [("vtab", "cifar"), ("vtab", "dtd")]
    aliases = "vtab:flowers102,pets,retinopathy,kitti_dist,smallnorb_azim,Patch-Camelyon"
    assert [s for _, s in parse_task_list(aliases)] == ["oxford_flowers102", "oxford_iiit_pet",
                                                         "diabetic_retinopathy", "kitti", "smallnorb_azi",
                                                         "patch_camelyon"]
    # The selection stage is part of the subtask name; "@test" is the final protocol's own name.
    assert parse_task_list("vtab:cifar100@val200,dtd@test,glue:rte") == [
        ("vtab", "cifar@val200"), ("vtab", "dtd"), ("glue", "rte")]
    with pytest.raises(UnknownNameError, match="Did you mean: dtd"):
        parse_task_list("vtab:cifar,dtdd")
    with pytest.raises(UnknownNameError):
        parse_task_list("vtab:imagenet")


def test_each_stage_names_the_lists_it_trains_and_scores_on(vtab_dir):
    final = VtabTask("patch_camelyon", str(vtab_dir))
    selection = VtabTask(VtabTask.selection_subtask("patch_camelyon"), str(vtab_dir))
    assert selection.subtask == "patch_camelyon@val200"
    assert final.eval_splits == ("test",) and selection.eval_splits == ("val200",)
    assert len(final.load("train")) == SMALL["train800"] + SMALL["val200"]  # train800val200
    assert len(final.load("test")) == SMALL["test"]
    assert len(selection.load("train")) == SMALL["train800"]
    assert len(selection.load("val200")) == SMALL["val200"]
    with pytest.raises(UserError, match="trains on train800 and scores val200"):
        selection.load("test")  # the selection stage never reads the test split
    assert final.data_source() == f"dir:{vtab_dir.resolve()}"
    assert VtabTask.subtask_order(["dtd@val200", "cifar", "dtd", "zzz"]) == ["cifar", "dtd", "dtd@val200", "zzz"]
    assert final.default_recipe("vit")["lr"] == 1e-3


def test_every_vision_method_runs_to_an_ok_cell_on_a_vtab_folder(vtab_dir, tmp_path, capsys):
    store = tmp_path / "store"
    code, err = run(["--methods", ",".join(VISION_METHODS), "--tasks", "vtab:patch_camelyon",
                     "--models", "tiny-vit", "--data-dir", str(vtab_dir), "--max-steps", "2", "--batch-size", "4",
                     "--store", str(store)], capsys)
    assert code == 0, err
    frame = ResultStore(store).load()
    assert set(frame["status"]) == {"ok"}
    assert set(frame["variant"]) == set(VISION_METHODS)
    assert set(frame["subtask"]) == {"patch_camelyon"} and set(frame["task"]) == {"vtab"}
    scored = frame[frame["is_primary"].astype(bool)]
    assert set(scored["split"]) == {"test"} and len(scored) == len(VISION_METHODS)
    trainable = frame[frame["metric"] == "trainable_params"].set_index("variant")["value"]
    head = trainable["linear-probe"]
    assert all(trainable[m] > head for m in VISION_METHODS if m != "linear-probe")
    assert trainable["full"] == max(trainable)
    predictions = ResultStore(store).load_predictions()
    assert len(predictions) == SMALL["test"] * len(VISION_METHODS)


def test_the_selection_stage_is_stored_apart_and_never_enters_the_vtab_means(vtab_dir, tmp_path, capsys):
    store = tmp_path / "store"
    code, err = run(["--methods", "linear-probe", "--tasks", "vtab:patch_camelyon,patch_camelyon@val200",
                     "--models", "tiny-vit", "--data-dir", str(vtab_dir), "--max-steps", "2", "--batch-size", "4",
                     "--store", str(store)], capsys)
    assert code == 0, err
    frame = ResultStore(store).load()
    scored = frame[frame["is_primary"].astype(bool)].set_index("subtask")
    assert scored.loc["patch_camelyon", "split"] == "test"
    assert scored.loc["patch_camelyon@val200", "split"] == "val200"
    assert frame.groupby("subtask")["cell_id"].nunique().to_dict() == {"patch_camelyon": 1,
                                                                       "patch_camelyon@val200": 1}
    (overall, specialized) = stats.family_aggregates("vtab", scored["value"].to_dict())
    assert overall.members == ("patch_camelyon",) and specialized.members == ("patch_camelyon",)
    assert overall.value == pytest.approx(scored.loc["patch_camelyon", "value"])


# -- aggregates ---------------------------------------------------------------------------------------


def test_group_means_and_the_19_task_mean_on_hand_made_numbers():
    scores = {name: 0.40 + 0.03 * i for i, name in enumerate(VtabTask.subtasks)}
    overall, natural, specialized, structured = stats.family_aggregates("vtab", scores)
    assert [a.name for a in (overall, natural, specialized, structured)] == [HEADLINE, "Natural", "Specialized",
                                                                              "Structured"]
    assert overall.value == pytest.approx(sum(scores.values()) / 19)  # 0.40 + 0.03 * 9
    assert overall.value == pytest.approx(0.67)
    assert natural.value == pytest.approx(np.mean([0.40 + 0.03 * i for i in range(7)]))
    assert specialized.value == pytest.approx(np.mean([0.40 + 0.03 * i for i in range(7, 11)]))
    assert structured.value == pytest.approx(np.mean([0.40 + 0.03 * i for i in range(11, 19)]))
    assert all(a.complete for a in (overall, natural, specialized, structured))
    assert stats.aggregate_label(overall) == HEADLINE

    # The headline is the mean over tasks, not over groups: groups of 7, 4 and 8 tasks at
    # VPT's full fine-tuning group means give its cited 65.57, where the mean of the group
    # means would be 68.96.
    cited = {name: mean for mean, members in zip((75.88, 83.36, 47.64), GROUPS.values(), strict=True)
             for name in members}
    (overall, *groups) = VtabTask.aggregate(cited)
    assert overall.value == pytest.approx(65.57, abs=0.01)
    assert np.mean([g.value for g in groups]) == pytest.approx(68.96, abs=0.01)


def test_partial_groups_are_labelled_and_nan_or_selection_scores_never_enter():
    scores = {"cifar": 0.50, "dtd": 0.70, "eurosat": 0.90, "sun397": math.nan, "dtd@val200": 0.01,
              "svhn@val200": 0.99}
    aggregates = stats.family_aggregates("vtab", scores)
    assert [stats.aggregate_label(a) for a in aggregates] == [
        "VTAB-1k mean (3/19 tasks)", "Natural (2/7 tasks)", "Specialized (1/4 tasks)"]
    overall, natural, specialized = aggregates
    assert overall.value == pytest.approx(0.70) and overall.members == ("cifar", "dtd", "eurosat")
    assert natural.value == pytest.approx(0.60) and specialized.value == pytest.approx(0.90)
    assert stats.family_aggregates("vtab", {"svhn@val200": 0.9}) == []


def _vtab_store(root: Path, subtasks: tuple[str, ...]) -> ResultStore:
    """lora and full on VTAB subtasks in the runner's row shapes (synthetic predictions)."""
    from benchmarks.synthetic_store import cell_id_for, make_cell

    store = ResultStore(root)
    for variant, skill in (("lora", 0.60), ("full", 0.70)):
        for i, sub in enumerate(subtasks):
            rows, predictions = make_cell(variant, "sst2", 0, skill=skill + 0.01 * i, n_examples=60)
            cid = cell_id_for("vtab", variant, sub)
            store.write_cell([dict(r, task="vtab", subtask=sub, cell_id=cid) for r in rows])
            store.write_predictions(cid, predictions)
    return store


@pytest.mark.parametrize("subtasks,labels", [
    (VtabTask.subtasks, [HEADLINE, "Natural", "Specialized", "Structured"]),
    (("cifar", "dtd", "eurosat", "dmlab"), ["VTAB-1k mean (4/19 tasks)", "Natural (2/7 tasks)",
                                            "Specialized (1/4 tasks)", "Structured (1/8 tasks)"]),
])
def test_suite_compare_and_the_site_show_the_vtab_group_means(tmp_path, capsys, subtasks, labels):
    from suite.reports import leaderboard
    from suite.reports.site import render_site

    store = _vtab_store(tmp_path / "store", subtasks)
    (board,) = leaderboard.build_boards(store.load(), "lora")
    assert [a.label for a in board.aggregates] == labels
    full = next(r for r in board.rows if r.variant == "full")
    means = {c.key[0]: full.entries[c.key].summary.mean for c in board.columns}
    expected = {HEADLINE: np.mean(list(means.values()))}
    expected |= {g: np.mean([means[s] for s in m if s in means]) for g, m in GROUPS.items()
                 if any(s in means for s in m)}
    for name, value in expected.items():
        assert full.aggregates[name] == pytest.approx(value)

    assert main(["compare", str(store.root), "--baseline", "lora"]) == 0
    out = capsys.readouterr().out
    # A wide table is split into blocks that fit the terminal: read the blocks' lines in order.
    header = " ".join(line for line in out.splitlines() if line.strip().startswith("method"))
    positions = [header.index(label) for label in labels]
    assert positions == sorted(positions) and positions[-1] < header.index("cifar")  # headline first, then groups
    full_line = " ".join(line for line in out.splitlines() if line.strip().startswith("full"))
    for name in expected:
        assert f"{expected[name] * 100:.2f}" in full_line

    render_site(store.root, tmp_path / "site", baseline="lora", workers=1)
    index = (tmp_path / "site" / "index.html").read_text()
    assert all(label in index for label in labels)
    assert all(f"{v * 100:.2f}" in index for v in expected.values())


# -- real images: scikit-learn's digits ------------------------------------------------------------------


@pytest.mark.parametrize("method,lr", [("full", "1e-3"), ("lora", "3e-3")])
def test_digits_as_a_folder_per_class_learn_well_above_chance(digits, tmp_path, capsys, method, lr):
    folder, _, labels = digits
    store = tmp_path / "store"
    code, err = run(["--methods", method, "--tasks", f"images:{folder}", "--models", "tiny-vit",
                     "--max-steps", "400", "--batch-size", "32", "--lr", lr, "--store", str(store)], capsys)
    assert code == 0, err
    ((_, subtask), accuracy), = primary(store).items()
    assert subtask == str(folder)
    assert accuracy > 0.7, accuracy  # ten classes: chance is 0.1
    frame = ResultStore(store).load()
    assert frame.loc[frame["is_primary"].astype(bool), "split"].item() == "test"
    assert set(frame["data_source"]) == {f"dir:{folder}"}
    records = ResultStore(store).load_predictions()
    assert len(records) == len(labels) - 1000  # the 1k protocol: 1,000 fit, the other 797 test


def test_the_image_folder_split_is_seeded_1k_protocol_and_the_same_for_every_cell(digits):
    folder, _, labels = digits
    task = ImageFolderTask(str(folder))
    assert task.num_labels == 10 and task.classes == [str(i) for i in range(10)]
    parts = {name: [e["path"] for e in task.examples_of(name)] for name in ("train800", "val200", "test")}
    assert [len(parts[n]) for n in ("train800", "val200", "test")] == [800, 200, len(labels) - 1000]
    assert not set(parts["train800"]) & set(parts["val200"]) and not set(parts["val200"]) & set(parts["test"])
    assert [e["path"] for e in task.examples_of("train800val200")] == parts["train800"] + parts["val200"]
    again = ImageFolderTask(f"{folder}@val200")
    assert [e["path"] for e in again.load("train")] == parts["train800"]
    assert again.eval_splits == ("val200",)
    first = task.examples_of("test")[0]
    assert first["label"] == int(Path(first["path"]).parent.name)


def test_digits_in_the_v_petl_layout_load_and_train_as_a_vtab_task(digits, tmp_path, capsys):
    from PIL import Image

    _, images, labels = digits
    root = tmp_path / "vtab-1k"
    folder = root / "svhn"  # ten digit classes, like SVHN
    order = np.random.default_rng(0).permutation(len(labels))
    cut = {"train800": order[:800], "val200": order[800:1000], "test": order[1000:]}
    for name, indices in cut.items():
        (folder / "images" / LIST_FOLDERS[name]).mkdir(parents=True)
        rows = []
        for i in indices:
            relative = f"images/{LIST_FOLDERS[name]}/{i:04d}.jpg"
            Image.fromarray(images[i], mode="L").save(folder / relative, quality=95)
            rows.append(f"{relative} {labels[i]}")
        (folder / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (folder / "train800val200.txt").write_text((folder / "train800.txt").read_text() + (folder / "val200.txt").read_text())

    task = VtabTask("svhn", str(root))
    task.check_data()
    train = task.load("train")
    assert len(train) == 1000 and len(task.load("test")) == len(labels) - 1000
    assert [e["label"] for e in train] == [int(labels[i]) for i in np.concatenate([cut["train800"], cut["val200"]])]
    decoded = task.image_of(train[0], "train", [])
    assert decoded.size == (8, 8) and decoded.mode == "RGB"

    store = tmp_path / "store"
    code, err = run(["--methods", "full", "--tasks", "vtab:svhn", "--models", "tiny-vit", "--data-dir", str(root),
                     "--max-steps", "300", "--batch-size", "32", "--lr", "1e-3", "--store", str(store)], capsys)
    assert code == 0, err
    ((_, subtask), accuracy), = primary(store).items()
    assert subtask == "svhn" and accuracy > 0.6, accuracy


# -- errors a user can cause ---------------------------------------------------------------------------


def test_missing_split_lists_and_images_are_named(vtab_dir, tmp_path, capsys):
    (vtab_dir / "patch_camelyon" / "test.txt").unlink()
    code, err = run(["--methods", "linear-probe", "--tasks", "vtab:patch_camelyon", "--models", "tiny-vit",
                     "--data-dir", str(vtab_dir), "--store", str(tmp_path / "s")], capsys)
    assert code == 2 and "test.txt" in err and "train800.txt" in err  # names the file and the layout
    VtabTask("patch_camelyon@val200", str(vtab_dir)).check_data()  # the selection stage needs no test list

    (vtab_dir / "patch_camelyon" / "images" / "val" / "000003.png").unlink()
    with pytest.raises(UserError, match=r"1 image\(s\) listed in val200.txt are missing: .*000003.png"):
        VtabTask("patch_camelyon@val200", str(vtab_dir)).check_data()
    with pytest.raises(UserError, match=r"no folder .*dtd"):
        VtabTask("dtd", str(vtab_dir)).check_data()


def test_bad_list_lines_are_named(vtab_dir):
    listing = vtab_dir / "patch_camelyon" / "train800.txt"
    listing.write_text("images/train/000000.png 0\nimages/train/000001.png 7\n")
    with pytest.raises(UserError, match=r"train800.txt, line 2: label 7 is outside 0..1"):
        VtabTask("patch_camelyon@val200", str(vtab_dir)).check_data()
    listing.write_text("images/train/000000.png\n")
    with pytest.raises(UserError, match=r"line 1: expected 'relative/path label'"):
        VtabTask("patch_camelyon@val200", str(vtab_dir)).check_data()


def test_an_undecodable_image_fails_by_name_or_is_skipped_and_counted(vtab_dir, tmp_path, capsys):
    broken = vtab_dir / "patch_camelyon" / "images" / "test" / "000004.png"
    broken.write_bytes(b"not an image at all")
    args = ["--methods", "linear-probe", "--tasks", "vtab:patch_camelyon", "--models", "tiny-vit",
            "--data-dir", str(vtab_dir), "--max-steps", "1", "--batch-size", "4"]
    code, err = run([*args, "--store", str(tmp_path / "fail")], capsys)
    assert code == 2 and str(broken) in err and "cannot be decoded" in err and "--bad-images skip" in err

    store = tmp_path / "skip"
    code, err = run([*args, "--bad-images", "skip", "--store", str(store)], capsys)
    assert code == 0, err
    assert "skipped 1 undecodable image(s) in split 'test'" in err and str(broken) in err
    frame = ResultStore(store).load()
    skipped = frame[frame["metric"] == "skipped_images"].set_index("split")["value"].to_dict()
    assert skipped == {"test": 1.0, "train": 0.0}
    assert len(ResultStore(store).load_predictions()) == SMALL["test"] - 1
    # The policy is stored with the cell and enters its id: skipping changes what is scored.
    assert all('"bad_images": "skip"' in config for config in frame["config"])


def test_a_vit_checkpoint_in_the_in21k_format_loads_into_the_layout_the_vision_methods_use(vtab_dir, tmp_path):
    """google/vit-base-patch16-224-in21k is a bare ViTModel saved with transformers 4's names
    (encoder.layer.N.attention.attention.query, ...); the default model cannot be downloaded
    here, so a tiny one is written in that format and loaded as the task would load it."""
    import json
    import re

    from safetensors.torch import save_file
    from transformers import ViTImageProcessor, ViTModel

    from suite.methods.vision.placement import vit_layout

    torch.manual_seed(0)
    bare = ViTModel(CATALOG["tiny-vit"].make_config())  # with its pooler, as the checkpoint
    renames = (("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
               ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
               ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"))
    old = {}
    for key, value in bare.state_dict().items():
        key = re.sub(r"^layers\.", "encoder.layer.", key)
        for name, old_name in renames:
            key = key.replace(name, old_name)
        old[key] = value.contiguous()
    assert "encoder.layer.0.attention.attention.query.weight" in old
    folder = tmp_path / "vit-in21k-format"
    folder.mkdir()
    config = bare.config.to_dict() | {"architectures": ["ViTModel"]}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(old, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)

    bundle = VtabTask("patch_camelyon", str(vtab_dir)).build_model(str(folder))
    model = bundle.model
    assert model.classifier.out_features == 2 and bundle.new_modules == (model.classifier,)
    assert vit_layout(model) is not None
    torch.testing.assert_close(model.vit.layers[1].attention.q_proj.weight, bare.layers[1].attention.q_proj.weight)
    torch.testing.assert_close(model.vit.layers[1].mlp.fc2.weight, bare.layers[1].mlp.fc2.weight)


def test_a_model_without_an_image_processor_is_refused_by_name(vtab_dir, tmp_path, capsys):
    from transformers import ViTForImageClassification

    folder = tmp_path / "bare-vit"
    ViTForImageClassification(CATALOG["tiny-vit"].make_config(num_labels=2)).save_pretrained(folder)
    with pytest.raises(UserError, match=r"has no image processor.*preprocessor_config.json"):
        VtabTask("patch_camelyon", str(vtab_dir)).build_model(str(folder))
    code, err = run(["--methods", "linear-probe", "--tasks", "vtab:patch_camelyon", "--models", str(folder),
                     "--data-dir", str(vtab_dir), "--max-steps", "1", "--store", str(tmp_path / "s")], capsys)
    assert code == 2 and "no image processor" in err


def test_image_folder_errors(digits, tmp_path):
    from PIL import Image

    with pytest.raises(UserError, match="needs a folder"):
        ImageFolderTask()  # what `--tasks images` builds
    with pytest.raises(UserError, match="no such folder"):
        parse_task_list(f"images:{tmp_path / 'nowhere'}")
    small = tmp_path / "small"
    for label in ("cat", "dog"):
        (small / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(band_image(np.random.default_rng(i), label == "dog", 2)).save(small / label / f"{i}.png")
    with pytest.raises(UserError, match=r"12 images; .* needs more than 1000.*split.txt"):
        ImageFolderTask(str(small)).check_data()

    # A split file fixes the splits at any size.
    rows = [f"{label}/{i}.png {word}" for label in ("cat", "dog")
            for i, word in enumerate(["train", "train", "train", "val", "test", "test"])]
    (small / "split.txt").write_text("\n".join(rows) + "\n")
    task = ImageFolderTask(str(small))
    task.check_data()
    assert [len(task.examples_of(n)) for n in ("train800", "val200", "train800val200", "test")] == [6, 2, 8, 4]
    assert {e["label"] for e in task.examples_of("test")} == {0, 1}
    (small / "split.txt").write_text("cat/0.png train\ncat/9.png test\n")
    with pytest.raises(UserError, match=r"split.txt, line 2: .*cat/9.png is not there"):
        ImageFolderTask(str(small)).check_data()
    (small / "split.txt").write_text("cat/0.png training\n")
    with pytest.raises(UserError, match=r"line 1: expected '<class>/<file> train\|val\|test'"):
        ImageFolderTask(str(small)).check_data()

    lonely = tmp_path / "lonely" / "only-class"
    lonely.mkdir(parents=True)
    with pytest.raises(UserError, match="1 class folder"):
        ImageFolderTask(str(lonely.parent)).check_data()


def test_without_data_dir_the_hub_archive_is_used_and_offline_fails_clearly(vtab_dir, tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot find the requested files in the local cache")

    vtab_module.hub_root.cache_clear()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    task = VtabTask("patch_camelyon")
    assert task.data_source() == "hub:XiN0919/VTAB-1k"
    with pytest.raises(UserError, match=r"cannot fetch VTAB-1k from the hub \(XiN0919/VTAB-1k.*--data-dir"):
        task.check_data()

    # The archive as V-PETL Bench publishes it (one top folder), unpacked once into the cache.
    archive = tmp_path / "vtab-1k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in vtab_dir.rglob("*"):
            if path.is_file():
                zf.write(path, Path("vtab-1k") / path.relative_to(vtab_dir))
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(a) or str(archive))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    vtab_module.hub_root.cache_clear()
    try:
        task = VtabTask("patch_camelyon")
        task.check_data()
        assert len(task.load("train")) == SMALL["train800"] + SMALL["val200"]
        assert calls == [("XiN0919/VTAB-1k", "vtab-1k.zip")]
        unpacked = next((tmp_path / "cache" / "suite" / "vtab-1k").iterdir())
        assert (unpacked / ".complete").exists() and (unpacked / "vtab-1k" / "patch_camelyon").is_dir()
    finally:
        vtab_module.hub_root.cache_clear()


# -- the vision methods, tied to their papers ---------------------------------------------------------------


def tiny_vit(num_labels: int = 3, seed: int = 0):
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    model = ViTForImageClassification(CATALOG["tiny-vit"].make_config(num_labels=num_labels)).eval()
    return model, MethodContext(bundle=ModelBundle(model, new_modules=(model.classifier,)), seed=seed,
                                task_kind="image-classification")


def apply(name: str, model, ctx, **args):
    from suite.config import build_config

    cls = METHODS.get(name).target
    return cls(build_config(cls.Config, args, name)).apply(model, ctx)


def capture(model) -> tuple[list, list]:
    """Record every block's input and output (hooks added after the method's, so they see its changes)."""
    inputs, outputs = [], []
    for block in model.vit.layers:
        block.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
        block.register_forward_hook(lambda m, args, out: outputs.append(out.detach().clone()))
    return inputs, outputs


def pixels(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_inserts_prompts_after_cls_as_jia_et_al_define_shallow_and_deep(deep):
    model, ctx = tiny_vit()
    x = pixels()
    with torch.no_grad():
        embedded = model.vit.embeddings(x)  # [CLS] + 16 patch tokens, positions added
    apply("vpt", model, ctx, num_tokens=5, deep=deep)
    inputs, outputs = capture(model)
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    blocks = list(model.vit.layers)
    p, d = 5, 64
    assert inputs[0].shape == (3, 1 + p + 16, d)
    # Layer 1 gets [x_0, P_0, E_0]: prompts between [CLS] and the patches, with no position added.
    torch.testing.assert_close(inputs[0][:, 0], embedded[:, 0])
    torch.testing.assert_close(inputs[0][:, 1 + p:], embedded[:, 1:])
    torch.testing.assert_close(inputs[0][:, 1:1 + p], model.vit.embeddings.vpt_prompt.tokens.expand(3, -1, -1))
    for i in range(1, len(blocks)):
        before = outputs[i - 1]
        torch.testing.assert_close(inputs[i][:, 0], before[:, 0])
        torch.testing.assert_close(inputs[i][:, 1 + p:], before[:, 1 + p:])
        if deep:  # eq. 7: the layer's own prompts replace what the last layer made of the others
            torch.testing.assert_close(inputs[i][:, 1:1 + p], blocks[i].vpt_prompt.tokens.expand(3, -1, -1))
        else:  # eq. 5: the prompts travel on like any token
            torch.testing.assert_close(inputs[i][:, 1:1 + p], before[:, 1:1 + p])
            assert not hasattr(blocks[i], "vpt_prompt")
    # y = Head(x_N): the classifier reads the [CLS] output after the final norm.
    torch.testing.assert_close(logits, model.classifier(model.vit.layernorm(outputs[-1])[:, 0]))

    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    prompts = sum(v for n, v in trainable.items() if "vpt_prompt" in n)
    assert prompts == (len(blocks) if deep else 1) * p * d
    assert set(trainable) - {n for n in trainable if "vpt_prompt" in n} == {"classifier.weight", "classifier.bias"}
    bound = math.sqrt(6 / (3 * 4 * 4 + d))  # Xavier over the 4x4 patch projection's fan-in and d
    largest = float(model.vit.embeddings.vpt_prompt.tokens.detach().abs().max())
    assert 0.8 * bound < largest <= bound


def test_houlsby_adds_two_near_identity_bottlenecks_per_block_before_the_residual():
    model, ctx = tiny_vit()
    reference, _ = tiny_vit()
    x = pixels()
    apply("houlsby", model, ctx, bottleneck=4)
    m, d = 4, 64
    for block in model.vit.layers:
        for path in ("attention.o_proj", "mlp.fc2"):
            adapter = block.get_submodule(path).houlsby_adapter
            for layer in (adapter.down, adapter.up):  # N(0, 1e-2) truncated at two standard deviations
                assert float(layer.weight.abs().max()) <= 2e-2 and float(layer.weight.std()) > 2e-3
                assert float(layer.bias.abs().max()) == 0.0
    # Each sub-layer output h becomes h + up(gelu(down(h))), before the block's residual.
    seen = {}
    o_proj = model.vit.layers[0].attention.o_proj
    o_proj.register_forward_pre_hook(lambda mod, args: seen.__setitem__("in", args[0]))
    o_proj.register_forward_hook(lambda mod, args, out: seen.__setitem__("out", out))
    with torch.no_grad():
        logits = model(pixel_values=x).logits
        base = reference(pixel_values=x).logits
        h = torch.nn.functional.linear(seen["in"], o_proj.weight, o_proj.bias)
        adapter = o_proj.houlsby_adapter
        expected = h + adapter.up(torch.nn.functional.gelu(adapter.down(h)))
    torch.testing.assert_close(seen["out"], expected)
    # Near-identity at the start: the model's outputs barely move.
    assert float((logits - base).abs().max()) < 0.05 * float(base.abs().max())

    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    adapters = sum(v for n, v in trainable.items() if "houlsby_adapter" in n)
    assert adapters == len(model.vit.layers) * 2 * (2 * d * m + m + d)
    norms = {n for n in trainable if "layernorm" in n}
    assert len(norms) == 2 * (2 * len(model.vit.layers) + 1)  # every layer norm (weight, bias), as the paper
    assert {"classifier.weight", "classifier.bias"} <= set(trainable)
    assert set(trainable) == {n for n in trainable if "houlsby_adapter" in n} | norms | {"classifier.weight",
                                                                                        "classifier.bias"}


def test_adaptformer_adds_a_scaled_parallel_branch_to_every_mlp_and_starts_as_the_backbone():
    model, ctx = tiny_vit()
    reference, _ = tiny_vit()
    x = pixels()
    apply("adaptformer", model, ctx, bottleneck=4, scale=0.1)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, reference(pixel_values=x).logits)  # up = 0
        for block in model.vit.layers:
            torch.nn.init.normal_(block.mlp.adaptformer_adapter.up.weight, std=0.5)
    inputs, outputs = capture(model)
    with torch.no_grad():
        model(pixel_values=x)
        for block, x_in, x_out in zip(model.vit.layers, inputs, outputs, strict=True):
            x_attn = x_in + block.attention(block.layernorm_before(x_in))[0]  # x'_l
            z = block.layernorm_after(x_attn)
            adapter = block.mlp.adaptformer_adapter
            branch = adapter.up(torch.relu(adapter.down(z)))
            # eq. (2): x_l = MLP(LN(x'_l)) + s * up(ReLU(down(LN(x'_l)))) + x'_l, s = 0.1
            torch.testing.assert_close(x_out, block.mlp.fc2(block.mlp.activation_fn(block.mlp.fc1(z)))
                                       + 0.1 * branch + x_attn)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    m, d = 4, 64
    assert sum(v for n, v in trainable.items() if "adaptformer" in n) == len(model.vit.layers) * (2 * d * m + m + d)
    assert set(trainable) - {n for n in trainable if "adaptformer" in n} == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("name", ["vpt", "houlsby", "adaptformer"])
def test_vision_methods_refuse_other_families_before_any_cell_runs(name):
    method = METHODS.get(name).target()
    vit = MethodTarget("tiny-vit", "vit", "image-classification", model_config("tiny-vit"))
    assert method.unsupported(vit) is None
    for model, family, kind in (("tiny-bert", "bert", "classification"), ("tiny-llama", "llama", "causal-lm")):
        reason = method.unsupported(MethodTarget(model, family, kind, model_config(model)))
        assert reason and name in reason
    reason = method.unsupported(MethodTarget("some/dinov2", "dinov2", "image-classification"))
    assert "dinov2" in reason and "lora" in reason


def test_vision_methods_train_and_save_only_their_parameters(vtab_dir):
    from suite.app.runner import apply_methods, prepare
    from suite.app.sweep import parse_method_spec, resolve_method_spec

    task = TASKS.get("vtab").target("patch_camelyon", str(vtab_dir))
    for label in ("vpt", "houlsby", "adaptformer"):
        method = resolve_method_spec(parse_method_spec(label))[0].instantiate()
        prepared = prepare(task, "tiny-vit", Recipe(limit=8, batch_size=4), "cpu", 0, [method])
        apply_methods(prepared, [method])
        model = prepared.bundle.model
        batch = task.collate(prepared.train_data[:4], prepared.bundle)
        model(**batch).loss.backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None}
        assert grads == {n for n, p in model.named_parameters() if p.requires_grad}
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
