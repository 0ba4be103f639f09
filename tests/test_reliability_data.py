"""Data validated at load: each bad input ends the real ``suite run`` with one message naming the file, the
cause and the fix, exit 2, before any cell runs; files saved on Windows (a byte-order mark, CRLF) load as
the originals. Each class of bad input adds to the fault-injection counts of ``tests/test_faults.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite.app.cli import main
from suite.errors import UserError
from tests.conftest import write_glue_original
from tests.test_faults import COUNTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BOM = b"\xef\xbb\xbf"
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A box holds 1,000 pens and 250 are sold. How many are left?",
     "answer": "1000 - 250 = <<1000-250=750>>750\n#### 750"},
    {"question": "It is 2 degrees and falls by 7. What is the temperature?", "answer": "2 - 7 = -5\n#### -5"},
    {"question": "A pack weighs 1,200 grams; half is used. How many grams are left?", "answer": "600\n#### 1,200"},
]


def windows(path: Path) -> None:
    """Save a text file as Windows tools do: a byte-order mark and CRLF line endings."""
    path.write_bytes(BOM + path.read_bytes().replace(b"\n", b"\r\n"))


def refused(argv: list[str], store: Path, capsys) -> str:
    """Run ``suite run``; it must exit 2 with one message and run no cell. Returns stderr."""
    code = main(["run", *argv, "--store", str(store), "--max-steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and not (store / "cells").exists()
    COUNTS["faults injected"] += 1
    return err


# -- GSM8K -------------------------------------------------------------------------------------------------
def write_gsm8k(folder: Path, train: list | None = None, test: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train or GSM8K_ROWS * 3), ("test", test or GSM8K_ROWS)):
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def gsm8k_argv(folder: Path) -> list[str]:
    return ["--methods", "lora", "--tasks", "gsm8k", "--models", "tiny-llama", "--data-dir", str(folder),
            "--validation-rows", "2", "--limit", "2"]


def test_gsm8k_answers_without_their_final_answer_are_refused_before_any_cell(tmp_path, capsys):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")
    free_text = [{"question": r["question"], "answer": r["answer"].split("####")[0]} for r in GSM8K_ROWS]
    data = write_gsm8k(tmp_path / "g", train=GSM8K_ROWS * 2 + free_text)
    err = refused(gsm8k_argv(data), tmp_path / "s", capsys)
    assert f"{data / 'train.jsonl'}, line 9: the answer does not end in a '#### N' final answer" in err
    assert "(4 of 12 rows are bad)" in err and "fix or remove the bad rows" in err


def test_gsm8k_test_rows_are_checked_too(tmp_path, capsys):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")
    data = write_gsm8k(tmp_path / "g", test=[GSM8K_ROWS[0], "[1, 2]", "3", '"text"', "{not json"])
    err = refused(gsm8k_argv(data), tmp_path / "s", capsys)
    assert f"{data / 'test.jsonl'}, line 2: an array, not a JSON object (4 of 5 rows are bad)" in err


def test_the_gsm8k_reader_counts_bad_rows_and_names_the_first(tmp_path):
    from suite.tasks.gsm8k import read_gsm8k

    data = write_gsm8k(tmp_path / "g", train=[*GSM8K_ROWS, {"question": "q", "answer": 7},
                                              {"question": "q"}, {"question": "q", "answer": "#### seven"}])
    with pytest.raises(UserError, match=r"train.jsonl, line 5: field\(s\) answer not text \(3 of 7 rows are bad\)"):
        read_gsm8k(data / "train.jsonl")
    assert read_gsm8k(data / "test.jsonl") == GSM8K_ROWS  # negative numbers and thousands separators are fine
    windows(data / "test.jsonl")
    assert read_gsm8k(data / "test.jsonl") == GSM8K_ROWS
    (data / "test.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(UserError, match=r"test.jsonl, line 1: not UTF-8 text .* at byte offset 17\); save"):
        read_gsm8k(data / "test.jsonl")


# -- GLUE -----------------------------------------------------------------------------------------------------
def test_glue_files_saved_on_windows_load_as_the_originals(tmp_path):
    from suite.tasks.glue import LAYOUTS, read_glue_tsv

    plain, saved = write_glue_original(tmp_path / "plain"), write_glue_original(tmp_path / "windows")
    for path in saved.rglob("*.tsv"):
        windows(path)
    for layout in LAYOUTS.values():
        for name in ("train.tsv", *layout.dev_files):
            original = read_glue_tsv(str(plain / layout.folder / name), layout)
            assert read_glue_tsv(str(saved / layout.folder / name), layout) == original, (layout.folder, name)
            assert len(original) == 40


def test_a_glue_run_on_windows_files_trains_like_one_on_the_originals(tmp_path, capsys):
    from suite.results.store import ResultStore

    scores = []
    for name in ("plain", "windows"):
        data = write_glue_original(tmp_path / name)
        if name == "windows":
            for path in (data / "SST-2").glob("*.tsv"):
                windows(path)
        store = tmp_path / f"store-{name}"
        code = main(["run", "--methods", "full", "--tasks", "glue:sst2", "--models", "tiny-bert", "--data-dir",
                     str(data), "--max-steps", "2", "--batch-size", "8", "--max-length", "16", "--no-progress",
                     "--store", str(store)])
        assert code == 0, capsys.readouterr().err[-2000:]
        frame = ResultStore(store).load()
        scores.append(float(frame.loc[frame["metric"] == "accuracy", "value"].iloc[0]))
    assert scores[0] == scores[1]


def test_glue_bytes_that_are_not_utf8_are_named_by_line_and_byte_offset(tmp_path, capsys):
    from suite.tasks.glue import LAYOUTS, read_glue_tsv

    data = write_glue_original(tmp_path / "glue", n=2000)  # the bad byte lies past the decoder's first chunk
    train = data / "SST-2" / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    lines[1500] = lines[1500].replace(b"\t", b" caf\xe9\t", 1)
    train.write_bytes(b"\n".join(lines))
    offset = sum(len(line) + 1 for line in lines[:1500]) + lines[1500].index(b"\xe9")
    message = f"{train}, line 1501: not UTF-8 text (invalid continuation byte at byte offset {offset})"
    with pytest.raises(UserError) as caught:
        read_glue_tsv(str(train), LAYOUTS["sst2"])
    assert str(caught.value).startswith(message)
    err = refused(["--methods", "full", "--tasks", "glue:sst2", "--models", "tiny-bert", "--data-dir", str(data)],
                  tmp_path / "s", capsys)
    assert message in err and "save the file as UTF-8" in err


# -- lm ---------------------------------------------------------------------------------------------------
def lm_argv(folder: Path, methods: str = "full") -> list[str]:
    return ["--methods", methods, "--tasks", "lm", "--models", "llama-tiny", "--data-dir", str(folder),
            "--batch-size", "2", "--max-length", "16"]


def corpus(folder: Path, n_train: int = 120, n_valid: int = 5, suffix: str = "txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        if not n:
            continue
        docs = [f"document {i} of {split} says that the cat sees a dog" for i in range(n)]
        text = "\n\n".join(docs) if suffix == "txt" else "\n".join(json.dumps({"text": d}) for d in docs)
        (folder / f"{split}.{suffix}").write_text(text + "\n", encoding="utf-8")
    return folder


def test_lm_text_that_is_not_utf8_is_named_with_its_file_line_and_byte_offset(tmp_path, capsys):
    from suite.tasks.pretraining import read_documents

    data = corpus(tmp_path / "lm")
    train = data / "train.txt"
    body = train.read_bytes()
    train.write_bytes(body.replace(b"document 3 ", b"document \xff3 ", 1))
    offset = body.index(b"document 3 ") + len(b"document ")
    err = refused(lm_argv(data), tmp_path / "s", capsys)
    assert f"{train}, line 7: not UTF-8 text (invalid start byte at byte offset {offset}); save the file as UTF-8" \
        in err
    late = corpus(tmp_path / "late", suffix="jsonl")  # far into the file: met while training, named the same
    lines = (late / "train.jsonl").read_bytes().split(b"\n")
    lines[110] = lines[110].replace(b"cat", b"c\xc3t")
    (late / "train.jsonl").write_bytes(b"\n".join(lines))
    offset = sum(len(line) + 1 for line in lines[:110]) + lines[110].index(b"\xc3")
    with pytest.raises(UserError, match=rf"train.jsonl, line 111: not UTF-8 text \(invalid continuation byte at "
                                        rf"byte offset {offset}\)"):
        list(read_documents(str(late / "train.jsonl")))


def test_lm_files_saved_on_windows_read_the_same_documents(tmp_path):
    from suite.tasks.pretraining import read_documents

    for suffix in ("txt", "jsonl"):
        plain, saved = corpus(tmp_path / f"p-{suffix}", suffix=suffix), corpus(tmp_path / f"w-{suffix}", suffix=suffix)
        windows(saved / f"train.{suffix}")
        documents = list(read_documents(str(plain / f"train.{suffix}")))
        assert len(documents) == 120
        assert list(read_documents(str(saved / f"train.{suffix}"))) == documents


def test_a_parquet_text_column_that_is_not_strings_is_refused_up_front(tmp_path, capsys):
    import pandas as pd

    data = tmp_path / "lm"
    data.mkdir()
    pd.DataFrame({"text": list(range(200))}).to_parquet(data / "train-00000.parquet")
    err = refused(lm_argv(data), tmp_path / "s", capsys)
    assert f"{data / 'train-00000.parquet'}: column 'text' holds int64, not strings" in err
    pd.DataFrame({"text": [f"doc {i}" for i in range(200)]}).astype("category").to_parquet(
        data / "train-00000.parquet")
    from suite.tasks.pretraining import LmTask

    LmTask(data_dir=str(data)).check_data()  # categorical strings are strings


def test_one_large_document_without_a_validation_file_is_refused_up_front(tmp_path, capsys):
    data = tmp_path / "lm"
    data.mkdir()
    (data / "train.txt").write_text("the cat sees a dog.\n" * 20_000, encoding="utf-8")  # one document
    err = refused(lm_argv(data), tmp_path / "s", capsys)
    assert "has no valid* file, and without one every 100th training document is held out for validation, but " \
           "its training files hold only 1; add a valid.txt or valid.jsonl file, or at least 100 documents" in err


def test_a_long_document_is_tokenised_in_pieces_into_the_same_blocks(tmp_path):
    from suite.models.tokenizers import byte_tokenizer
    from suite.tasks.families.lm_loss import PIECE_CHARS, packed_blocks, pieces

    tokenizer = byte_tokenizer()
    long = "".join(f"line {i} of a long document, café\n" for i in range(3 * PIECE_CHARS // 30))
    docs = ["a short one", long, "another short one"]
    cut = list(pieces(long))
    assert len(cut) > 3 and all(len(p) <= PIECE_CHARS for p, _ in cut) and "".join(p for p, _ in cut) == long
    assert [last for _, last in cut] == [False] * (len(cut) - 1) + [True]
    assert all(p.endswith("\n") for p, _ in cut)  # cut after a line break
    whole: list[int] = []
    for doc in docs:
        whole += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [b["input_ids"] for b in packed_blocks(lambda: iter(docs), tokenizer, 64)]
    assert blocks == [whole[i:i + 64] for i in range(0, len(whole) - 63, 64)]
    assert [b["input_ids"] for b in packed_blocks(lambda: iter(docs), tokenizer, 64, limit=5)] == blocks[:5]


# -- images ---------------------------------------------------------------------------------------------------
def image_folder(root: Path) -> Path:
    from PIL import Image

    for label, shade in (("cat", 40), ("dog", 200)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (shade, shade, shade)).save(root / label / f"{i}.png")
    rows = [f"{label}/{i}.png {word}" for label in ("cat", "dog") for i, word in enumerate(("train", "val", "test"))]
    (root / "split.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_an_image_split_file_that_is_not_utf8_is_named_with_its_byte_offset(tmp_path, capsys):
    folder = image_folder(tmp_path / "pets")
    split = folder / "split.txt"
    body = split.read_bytes()
    split.write_bytes(body.replace(b"dog/1.png", b"d\xf6g/1.png"))  # Latin-1, as an old editor saves it
    offset = body.index(b"dog/1.png") + 1
    err = refused(["--methods", "linear-probe", "--tasks", f"images:{folder}", "--models", "tiny-vit"],
                  tmp_path / "s", capsys)
    assert f"{split}, line 5: not UTF-8 text (invalid start byte at byte offset {offset}); save the file as UTF-8" \
        in err


def test_an_image_split_file_saved_on_windows_gives_the_same_splits(tmp_path):
    from suite.tasks.images import ImageFolderTask

    plain, saved = image_folder(tmp_path / "a"), image_folder(tmp_path / "b")
    windows(saved / "split.txt")
    names = ("train800", "val200", "train800val200", "test")
    expected = [[(Path(e["path"]).relative_to(plain).as_posix(), e["label"]) for e in
                 ImageFolderTask(str(plain)).examples_of(n)] for n in names]
    task = ImageFolderTask(str(saved))
    task.check_data()
    assert [[(Path(e["path"]).relative_to(saved).as_posix(), e["label"]) for e in task.examples_of(n)]
            for n in names] == expected
    assert [len(x) for x in expected] == [2, 2, 4, 2]


def test_a_vtab_list_that_is_not_utf8_is_named_and_one_saved_on_windows_reads_the_same(tmp_path, capsys):
    from PIL import Image

    from suite.tasks.vtab import read_split_list

    folder = tmp_path / "vtab-1k" / "eurosat"
    (folder / "images").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(folder / "images" / f"{i}.png")
    for name in ("train800", "val200", "train800val200", "test"):
        (folder / f"{name}.txt").write_text("".join(f"images/{i}.png {i % 2}\n" for i in range(4)), encoding="utf-8")
    expected = read_split_list(str(folder / "test.txt"), str(folder), 10)
    windows(folder / "test.txt")
    assert read_split_list(str(folder / "test.txt"), str(folder), 10) == expected
    (folder / "train800val200.txt").write_bytes(b"images/0.png 0\nimages/\x801.png 1\n")
    err = refused(["--methods", "linear-probe", "--tasks", "vtab:eurosat", "--models", "tiny-vit", "--data-dir",
                   str(tmp_path / "vtab-1k")], tmp_path / "s", capsys)
    assert f"{folder / 'train800val200.txt'}, line 2: not UTF-8 text (invalid start byte at byte offset 22)" in err


# -- lora on a model trained from scratch -----------------------------------------------------------------------
def test_an_adapter_on_a_model_trained_from_scratch_is_refused_before_any_cell(tmp_path, capsys):
    from suite.config import build_config
    from suite.method import MethodTarget
    from suite.registry import METHODS

    data = corpus(tmp_path / "lm")
    err = refused(lm_argv(data, "lora,full"), tmp_path / "s", capsys)
    assert "method 'lora' on model family 'llama' (llama-tiny, task lm): the model is trained from scratch" in err
    assert "pretrain with full or a training recipe" in err and "continue pretraining a pretrained model" in err
    assert "modules_to_save" not in err
    lora = METHODS.get("lora").target
    method = lora(build_config(lora.Config, {}, "lora"))
    from suite.registry import TASKS

    lm = TASKS.get("lm").target()
    assert lm.trains_from_scratch("llama-30m@gpt2") and lm.trains_from_scratch("tiny-llama")
    assert not lm.trains_from_scratch("path/to/a/pretrained-model")  # continued pretraining
    assert method.unsupported(MethodTarget("llama-30m@gpt2", "llama", "language-modeling", from_scratch=True))
    assert method.unsupported(MethodTarget("tiny-llama", "llama", "causal-lm")) is None  # fine-tuning: a fresh head
    assert method.unsupported(MethodTarget("tiny-bert", "bert", "classification")) is None
