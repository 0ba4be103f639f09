"""GSM8K and the causal-LM family: answer-only loss, lm-eval's scoring, forgetting, the CLI path.

A tiny Llama built from a config stands in for a pretrained causal LM (none can be downloaded
here); its generations are meaningless, so scoring is checked on hand-made generations fed
through lm-eval's own filters, and the end-to-end runs check what is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import suite.results
from suite.errors import UserError
from suite.registry import TASKS
from tests.conftest import REPO, run_suite

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[eval]')")

SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
PROBLEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    ("A box holds 1,000 pens and 250 are sold. How many are left?", "1000 - 250 = <<1000-250=750>>750\n#### 750"),
    ("It is 2 degrees and falls by 7. What is the temperature?", "2 - 7 = <<2-7=-5>>-5\n#### -5"),
    ("Sam reads 12 pages a day for 3 days. How many pages?", "12 * 3 = <<12*3=36>>36\n#### 36"),
    ("A pack has 1,200 grams; half is used. How many grams are left?", "1200 / 2 = 600\n#### 600"),
    ("Ann has 9 cards and gives away 4. How many are left?", "9 - 4 = <<9-4=5>>5\n#### 5"),
]


def write_gsm8k(folder: Path, n_train: int = 24) -> Path:
    """GSM8K's original layout: train.jsonl and test.jsonl of {"question", "answer"}."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": q, "answer": a} for q, a in PROBLEMS]
    with open(folder / "train.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n_train):
            fh.write(json.dumps(rows[i % len(rows)]) + "\n")
    with open(folder / "test.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return folder


def gsm8k_task(folder: Path, **options):
    cls = TASKS.get("gsm8k").target
    from suite.config import build_config

    return cls(data_dir=str(folder), options=build_config(cls.Options, {"validation_rows": 2, **options}, "gsm8k"))


def test_the_loss_is_on_answer_tokens_only(tmp_path):
    task = gsm8k_task(write_gsm8k(tmp_path / "g"))
    bundle = task.build_model("tiny-llama")
    tokenizer = bundle.tokenizer
    example = task.load("train")[0]
    item = task.encode(example, tokenizer, 256)
    prompt_ids = task._prompt_ids(tokenizer, example["prompt"])
    answer_ids = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert item["input_ids"] == prompt_ids + answer_ids
    assert item["labels"] == [-100] * len(prompt_ids) + answer_ids
    short = task.encode(example, tokenizer, len(answer_ids) + 3)  # too long: the prompt loses its start
    assert short["labels"][-len(answer_ids):] == answer_ids and len(short["input_ids"]) == len(answer_ids) + 3
    batch = task.collate([item, short], bundle)
    assert (batch["labels"][1, len(short["input_ids"]):] == -100).all()  # padding carries no loss
    assert (batch["attention_mask"][1, len(short["input_ids"]):] == 0).all()


# Hand-made generations and what lm-eval's gsm8k filters make of them (strict: "#### N";
# flexible: the last number), after its ignore rules (commas, "$", a final ".").
GENERATIONS = {
    PROBLEMS[0][0]: ("3 plus 4 is 7.\n#### 7", 1.0, 1.0),
    PROBLEMS[1][0]: ("They have 750 left. #### 750", 1.0, 1.0),
    PROBLEMS[2][0]: ("The answer is -5.", 0.0, 1.0),
    PROBLEMS[3][0]: ("#### 36\nThe answer is 37", 1.0, 0.0),
    PROBLEMS[4][0]: ("Half is 600 grams.\n#### 1,200", 0.0, 0.0),
    PROBLEMS[5][0]: ("The answer is: 5", 0.0, 1.0),
}


def test_scoring_is_lm_evals_own_on_hand_made_generations(tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    def canned(self, requests, disable_tqdm=False):
        return [next(g for q, (g, _, _) in GENERATIONS.items() if q in r.args[0]) for r in requests]

    monkeypatch.setattr(HFLM, "generate_until", canned)
    task = gsm8k_task(write_gsm8k(tmp_path / "g"))
    bundle = task.build_model("tiny-llama")
    from suite.recipe import Recipe

    out = task.evaluate(bundle, Recipe(max_length=64, eval_batch_size=4), "cpu")
    records = out.records.set_index("example_id")
    for i, (question, _) in enumerate(PROBLEMS):
        _, strict, flexible = GENERATIONS[question]
        assert records.loc[i, "correct_strict"] == strict, (question, records.loc[i].to_dict())
        assert records.loc[i, "correct"] == flexible, (question, records.loc[i].to_dict())
    metrics = {m.name: m.value for m in out.metrics}
    assert metrics["exact_match_strict"] == pytest.approx(3 / 6)
    assert metrics["exact_match_flexible"] == pytest.approx(4 / 6)
    assert next(m for m in out.metrics if m.is_primary).name == "exact_match_flexible"


def test_lora_and_full_run_end_to_end_with_forgetting(tmp_path):
    data = write_gsm8k(tmp_path / "g")
    general = tmp_path / "general.txt"
    general.write_text("the cat sat on the mat\nit was a sunny day in the city\n", encoding="utf-8")
    store = tmp_path / "store"
    result = run_suite("run", "--methods", "lora,full", "--tasks", "gsm8k", "--models", "tiny-llama",
                       "--data-dir", str(data), "--limit", "4", "--max-steps", "3", "--batch-size", "2",
                       "--max-length", "64", "--max-new-tokens", "6", "--validation-rows", "2",
                       "--forgetting", str(general), "--store", str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    frame = suite.results.load(store)
    assert (frame["status"] == "ok").all() and frame["cell_id"].nunique() == 2
    for _, cell in frame.groupby("method"):
        metrics = cell.set_index("metric")["value"]
        assert {"exact_match_strict", "exact_match_flexible", "forgetting_ce_before", "forgetting_ce_after",
                "forgetting_ce_increase", "train_time_s", "trainable_params", "peak_memory_mb"} <= set(metrics.index)
        assert metrics["forgetting_ce_increase"] == pytest.approx(
            metrics["forgetting_ce_after"] - metrics["forgetting_ce_before"])
        assert not cell.set_index("metric").loc["forgetting_ce_increase", "higher_is_better"]
    config = json.loads(frame["config"].iloc[0])
    identity = config["task_identity"]
    assert identity["lm_eval_task"] == "gsm8k" and identity["lm_eval"] and identity["forgetting"] == str(general)
    predictions = suite.results.ResultStore(store).load_predictions()
    assert len(predictions) == 2 * 4 and {"correct", "correct_strict", "generated"} <= set(predictions.columns)


@pytest.mark.skipif(not SHARED_GSM8K.exists(), reason="real GSM8K train not present (../shared/data/gsm8k)")
def test_real_gsm8k_files_load_and_score(tmp_path):
    """The real GSM8K train file; its last rows stand in for the test split, in the same layout."""
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    lines = SHARED_GSM8K.read_text(encoding="utf-8").splitlines()
    (folder / "train.jsonl").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(lines[-5:]) + "\n", encoding="utf-8")
    task = gsm8k_task(folder, validation_rows=50)
    train, test = task.load("train"), task.load("test")
    assert len(train) == 150 and len(test) == 5
    assert all(e["target"].lstrip("-").replace(".", "").isdigit() for e in train)
    assert train[0]["prompt"].startswith("Question: ") and train[0]["prompt"].endswith("Think step by step.\nAnswer:")
    store = tmp_path / "store"
    result = run_suite("run", "--methods", "lora", "--tasks", "gsm8k", "--models", "tiny-llama", "--data-dir",
                       str(folder), "--limit", "3", "--max-steps", "2", "--batch-size", "2", "--max-length", "96",
                       "--max-new-tokens", "4", "--store", str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert set(suite.results.load(store)["metric"]) >= {"exact_match_strict", "exact_match_flexible"}


def test_clear_errors(tmp_path, monkeypatch):
    data = write_gsm8k(tmp_path / "g")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"q": "x", "a": "1"}) + "\n", encoding="utf-8")
    (bad / "test.jsonl").write_text(json.dumps({"question": "x", "answer": "#### 1"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"train.jsonl, line 1: missing field\(s\) question, answer"):
        gsm8k_task(bad).load("train")
    with pytest.raises(UserError, match="is an encoder, not a causal LM|not a causal LM"):
        gsm8k_task(data).build_model("tiny-bert")
    with pytest.raises(UserError, match="missing MetaMathQA-395K.json"):
        gsm8k_task(data, train_data="metamath").check_data()
    result = run_suite("run", "--methods", "lora", "--tasks", "gsm8k", "--models", "tiny-llama",
                       "--data-dir", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name.startswith("lm_eval"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    from suite.tasks.lm_eval_scoring import require_lm_eval

    with pytest.raises(UserError, match=r"pip install -e '\.\[eval\]'"):
        require_lm_eval()


def test_metamath_rows_are_filtered_by_length_as_peft_does(tmp_path):
    data = write_gsm8k(tmp_path / "g")
    rows = [{"query": "What is 2+2?", "response": "2+2=4. The answer is: 4"},
            {"query": "long " * 300, "response": "The answer is: 1"}]
    (data / "MetaMathQA-395K.json").write_text(json.dumps(rows), encoding="utf-8")
    train = gsm8k_task(data, train_data="metamath").load("train")
    assert len(train) == 1 and train[0]["answer"] == " 2+2=4. The answer is: 4"


def test_a_chat_template_wraps_prompts_where_the_tokenizer_has_one(tmp_path):
    task = gsm8k_task(write_gsm8k(tmp_path / "g"))
    tokenizer = task.build_model("tiny-llama").tokenizer
    plain = task._prompt_ids(tokenizer, "what is one")
    tokenizer.chat_template = "{% for m in messages %}user : {{ m['content'] }} assistant :{% endfor %}"
    wrapped = task._prompt_ids(tokenizer, "what is one")
    assert tokenizer.decode(wrapped).startswith("user :") and len(wrapped) > len(plain)
    off = gsm8k_task(tmp_path / "g", chat_template="off")
    assert off._prompt_ids(tokenizer, "what is one") == plain


def test_the_peft_metamath_preset_runs_with_a_model_and_overrides(tmp_path):
    data = write_gsm8k(tmp_path / "g")
    rows = [{"query": q, "response": a.replace("####", "The answer is:")} for q, a in PROBLEMS]
    (data / "MetaMathQA-395K.json").write_text(json.dumps(rows), encoding="utf-8")
    store = tmp_path / "store"
    result = run_suite("run", "--preset", "peft-metamath", "--models", "tiny-llama", "--data-dir", str(data),
                       "--methods", "lora:r=32", "--max-steps", "2", "--limit", "3", "--max-length", "64",
                       "--max-new-tokens", "4", "--validation-rows", "2", "--store", str(store), "--no-progress")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store)
    config = json.loads(frame["config"].iloc[0])
    assert config["task_identity"]["train_data"] == "metamath" and config["task_identity"]["max_new_tokens"] == 4
    recipe = json.loads(frame["recipe"].iloc[0])  # a method given with --methods trains at peft's defaults
    assert recipe["lr"] == 1e-4 and recipe["schedule"] == "cosine" and recipe["max_steps"] == 2
    assert recipe["weight_decay"] == 0.1 and recipe["warmup_ratio"] == 0.1 and recipe["decay"] == "all"
    assert frame["variant"].iloc[0] == "lora:r=32"


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    import torch

    from suite.train import EpochPermutation, LengthGroupedBatches

    lengths = [int(v) for v in torch.randint(5, 300, (1000,), generator=torch.Generator().manual_seed(3))]

    def padding(batches) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(0), drop_last=False, window=10))
    assert sorted(i for b in grouped for i in b) == list(range(1000))  # one epoch: every example once
    assert all(len(b) == 8 for b in grouped) and len(grouped) == 125
    plain = list(EpochPermutation(1000, torch.Generator().manual_seed(0)))
    plain_batches = [plain[i:i + 8] for i in range(0, 1000, 8)]
    assert padding(grouped) < padding(plain_batches) / 3
    again = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(0), drop_last=False, window=10))
    other = list(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(1), drop_last=False, window=10))
    assert grouped == again and grouped != other  # a function of the seed alone
    dropped = LengthGroupedBatches(lengths[:1003], 8, torch.Generator().manual_seed(0), drop_last=True)
    assert len(list(dropped)) == len(dropped) == 125


def test_group_by_length_trains_gsm8k_and_enters_the_cell_id(tmp_path):
    data = write_gsm8k(tmp_path / "g", n_train=12)
    store = tmp_path / "store"
    common = ["--methods", "lora", "--tasks", "gsm8k", "--models", "tiny-llama", "--data-dir", str(data),
              "--limit", "6", "--max-steps", "3", "--batch-size", "2", "--max-length", "64",
              "--max-new-tokens", "4", "--validation-rows", "2", "--store", str(store), "--no-progress"]
    assert run_suite("run", *common).returncode == 0
    result = run_suite("run", *common, "--group-by-length")
    assert result.returncode == 0, result.stderr
    frame = suite.results.load(store)
    assert (frame["status"] == "ok").all() and frame["cell_id"].nunique() == 2
    recipes = {json.loads(c)["recipe"].get("group_by_length") for c in frame["config"]}
    assert recipes == {None, True}


def test_the_trainer_batches_by_length_when_the_recipe_asks():
    import torch

    from suite.recipe import Recipe
    from suite.train import Trainer

    data = [{"input_ids": [1] * n} for n in [3, 90, 4, 88, 5, 91, 6, 87] * 8]

    def widest_spread(recipe: Recipe) -> int:
        trainer = Trainer(torch.nn.Linear(2, 2), data, lambda items: {"items": items}, recipe, [], "cpu", seed=0,
                          progress=False)
        batches = trainer.batches()
        spreads = []
        for _ in range(8):
            lengths = [len(it["input_ids"]) for it in next(batches)["items"]]
            spreads.append(max(lengths) - min(lengths))
        return max(spreads)

    assert widest_spread(Recipe(batch_size=4, max_steps=8, group_by_length=True)) <= 6
    assert widest_spread(Recipe(batch_size=4, max_steps=8)) > 50
