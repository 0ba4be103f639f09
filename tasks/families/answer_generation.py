"""Causal-LM fine-tuning with generation: the family base of instruction and math-reasoning tasks.

Examples are dicts ``{"id", "prompt", "answer", "target"}``: the model learns to continue
``prompt`` with ``answer``; ``target`` is what a correct generation must contain after
extraction (GSM8K: the final number). Training sequences are prompt + answer + EOS with
the loss on the answer tokens only (labels -100 on the prompt and the padding). The
prompt is truncated from the left when a sequence exceeds ``max_length``, so the answer
the loss is on survives.

Evaluation generates greedily from each prompt (left-padded batches, at most
``max_new_tokens`` new tokens, stopping at EOS), extracts an answer from the text
(``extract``, a subclass hook) and scores exact match against ``target``. Per-example
records keep the generated text and the extracted answer beside the correctness, so
paired tests and error analysis work on the stored predictions.

Nothing is new in a causal LM: its ``lm_head`` and embeddings are pretrained, so the
bundle's ``new_modules`` is empty and no method but full fine-tuning trains them.

Options every causal-LM task has (``CausalLMOptions``): the tokenizer's chat template
(``auto``: used where the tokenizer has one), forgetting (cross-entropy on general text
before and after training) and further lm-eval tasks scored on the trained model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from suite.config import option
from suite.errors import UserError
from suite.metrics import loss, score
from suite.task import EvalOutput, Metric, ModelBundle, Task, evaluation_mode, in_batches
from suite.tasks.text_files import open_text

IGNORE_INDEX = -100  # labels the loss skips (transformers' convention)
# Encoder families transformers can still fit with an LM head; they do not generate left to right.
ENCODER_ONLY = ("bert", "roberta", "xlm-roberta", "electra", "deberta", "deberta-v2", "distilbert", "albert",
                "mpnet", "camembert", "vit")


@dataclass(frozen=True)
class CausalLMOptions:
    chat_template: Literal["auto", "off"] = option("auto", "auto: wrap prompts in the tokenizer's chat template, "
                                                           "where it has one; off: plain prompts")
    max_new_tokens: int = option(0, "tokens generated per answer (greedy); 0: the task's default")
    forgetting: str | None = option(None, "general text (.txt, .jsonl or .parquet file, or hub id[:config]) whose "
                                          "cross-entropy is measured before and after training")
    forgetting_rows: int = option(100, "rows of the --forgetting text to measure")
    eval_tasks: tuple[str, ...] = option((), "lm-eval tasks also scored after training, e.g. "
                                             "lm-eval:arc_easy,hellaswag")
    lm_eval_include: str | None = option(None, "a folder of lm-eval task YAMLs (local data for --eval-tasks)")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.forgetting_rows < 1:
            raise ValueError("forgetting_rows must be at least 1")
        names = []
        for item in self.eval_tasks:  # "lm-eval:arc_easy,hellaswag" arrives as one item
            for name in str(item).split(","):
                name = name.strip().removeprefix("lm-eval:").strip()
                if name:
                    names.append(name)
        object.__setattr__(self, "eval_tasks", tuple(names))
        if self.lm_eval_include and not Path(self.lm_eval_include).is_dir():
            raise ValueError(f"lm_eval_include '{self.lm_eval_include}' is not a folder")


class CausalLMTask(Task):
    """A task whose model is a causal LM that answers prompts by generating text."""

    objective = "causal-lm"
    primary_metric = "exact_match"
    metrics = (score("exact_match", "exact match", per_example="correct"),
               loss("forgetting_ce_before", "general-text loss before training", split="general"),
               loss("forgetting_ce_after", "general-text loss after training", split="general"),
               loss("forgetting_ce_increase", "forgetting (loss increase)", split="general"))
    carves_validation = True
    max_new_tokens: ClassVar[int] = 32  # default generation budget (options.max_new_tokens overrides)
    tiny_words: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = CausalLMOptions

    @property
    def new_tokens(self) -> int:
        return self.options.max_new_tokens or self.max_new_tokens

    def check_data(self) -> None:
        if self.options.eval_tasks:
            from suite.tasks.lm_eval_scoring import require_lm_eval

            require_lm_eval()
        if self.options.forgetting and not Path(self.options.forgetting).exists() and \
                self.options.forgetting.startswith((".", "/", "~")):
            raise UserError(f"forgetting text '{self.options.forgetting}' does not exist")

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        if self.options.eval_tasks:
            from suite.tasks.lm_eval_scoring import lm_eval_version

            identity["lm_eval"] = lm_eval_version()
        return identity

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from suite.models.loading import load_model, model_family

        loaded = load_model(model_name, "causal-lm", task=self.name, words=self.tiny_words)
        model, tokenizer = loaded.model, loaded.processor
        if getattr(model.config, "model_type", "") in ENCODER_ONLY:
            raise UserError(f"model '{model_name}' ({model.config.model_type}) is an encoder, not a causal LM; "
                            f"task '{self.name}' needs a decoder (Llama, Qwen, Mistral, GPT-2, ...)")
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of '{model_name}' has no EOS token; task '{self.name}' needs one "
                            f"to end answers")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and loss
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return ModelBundle(model=model, processor=tokenizer, new_modules=(), family=model_family(model),
                           name=model_name)

    # -- text ---------------------------------------------------------------------------------
    def load(self, split: str, limit: int | None = None) -> list[dict]:
        """Examples ``{"id", "prompt", "answer", "target"}`` of a split, at most ``limit``."""
        raise NotImplementedError

    def extract(self, generated: str) -> str:
        """The answer inside a generation (default: its first line, stripped)."""
        text = generated.strip()
        return text.splitlines()[0].strip() if text else ""

    def is_correct(self, extracted: str, example: dict) -> bool:
        return extracted == str(example["target"]).strip()

    def uses_chat_template(self, tokenizer: Any) -> bool:
        return self.options.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))

    def _prompt_ids(self, tokenizer: Any, prompt: str) -> list[int]:
        if self.uses_chat_template(tokenizer):  # the template places its own special tokens
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids

    def encode(self, example: dict, tokenizer: Any, max_length: int) -> dict:
        """Prompt + answer + EOS, labels only on the answer; the prompt loses its start when too long."""
        prompt = self._prompt_ids(tokenizer, example["prompt"])
        answer = tokenizer(example["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        answer = answer[:max_length]
        prompt = prompt[max(0, len(prompt) - (max_length - len(answer))):] if max_length > len(answer) else []
        ids = prompt + answer
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * len(prompt) + answer, "example_id": example["id"]}

    # -- data ---------------------------------------------------------------------------------
    def train_data(self, bundle: ModelBundle, recipe: Any) -> list[dict]:
        return [self.encode(e, bundle.tokenizer, recipe.max_length) for e in self.examples("train", recipe.limit)]

    def collate(self, items: list[dict], bundle: ModelBundle) -> dict:
        import torch

        pad_id = bundle.tokenizer.pad_token_id
        width = max(len(it["input_ids"]) for it in items)

        def pad(key: str, fill: int) -> Any:
            return torch.tensor([it[key] + [fill] * (width - len(it[key])) for it in items])

        return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", IGNORE_INDEX)}

    # -- evaluation ---------------------------------------------------------------------------
    def generate(self, bundle: ModelBundle, prompts: list[str], device: str, max_length: int) -> list[str]:
        """Greedy continuations of ``prompts`` (left-padded batch), decoded without special tokens."""
        import torch

        tokenizer = bundle.tokenizer
        encoded = [self._prompt_ids(tokenizer, p)[-max_length:] for p in prompts]
        width = max(len(e) for e in encoded)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        output = bundle.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                       max_new_tokens=self.new_tokens, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)
        return tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)

    def evaluate(self, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        """Exact match of greedy generations on each split, then forgetting and further lm-eval tasks."""
        return self.with_general_metrics(super().evaluate(bundle, recipe, device), bundle, recipe, device)

    def evaluate_split(self, bundle: ModelBundle, recipe: Any, device: str, split: str) -> tuple[list[Metric], Any]:
        """Greedy generation on one split, exact match after ``extract``."""
        import pandas as pd

        examples = self.examples(split, recipe.limit)
        generated: list[str] = []
        for chunk in in_batches(examples, recipe.eval_batch_size):
            generated += self.generate(bundle, [e["prompt"] for e in chunk], device, recipe.max_length)
        extracted = [self.extract(g) for g in generated]
        correct = [float(self.is_correct(x, e)) for x, e in zip(extracted, examples, strict=True)]
        return [Metric(self.primary_metric, sum(correct) / len(correct))], pd.DataFrame({
            "split": split, "example_id": [e["id"] for e in examples], "prediction": extracted,
            "label": [str(e["target"]) for e in examples], "correct": correct, "generated": generated,
        })

    # -- general abilities: forgetting and further lm-eval tasks ---------------------------------------
    def before_training(self, bundle: ModelBundle, recipe: Any, device: str) -> None:
        """The forgetting baseline: general-text loss of the model as the methods left it, untrained
        (for LoRA-like methods and full fine-tuning this is the base model's own loss)."""
        self._forgetting_before = None
        if self.options.forgetting:
            self._forgetting_before = self.general_text_loss(bundle, recipe, device)

    def with_general_metrics(self, out: EvalOutput, bundle: ModelBundle, recipe: Any, device: str) -> EvalOutput:
        """Add forgetting (before, after, increase; lower is better) and the lm-eval tasks' metrics."""
        before = getattr(self, "_forgetting_before", None)
        if self.options.forgetting and before is not None:
            after = self.general_text_loss(bundle, recipe, device)
            out.metrics += [Metric("forgetting_ce_before", before, split="general", higher_is_better=False),
                            Metric("forgetting_ce_after", after, split="general", higher_is_better=False),
                            Metric("forgetting_ce_increase", after - before, split="general",
                                   higher_is_better=False)]
        if self.options.eval_tasks:
            out.metrics += self.harness_metrics(bundle, recipe, device)
        return out

    def general_text_loss(self, bundle: ModelBundle, recipe: Any, device: str) -> float:
        """Mean token cross-entropy on the forgetting text (each row cut at ``max_length`` tokens)."""
        import torch

        tokenizer = bundle.tokenizer
        model = bundle.model
        with evaluation_mode(model):
            total, tokens = 0.0, 0
            with torch.no_grad():
                for text in general_text(self.options.forgetting, self.options.forgetting_rows):
                    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                    ids = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + ids
                    ids = torch.tensor([ids[:recipe.max_length]], device=device)
                    if ids.shape[1] < 2:
                        continue
                    loss = model(input_ids=ids, labels=ids).loss.float()
                    total += float(loss) * (ids.shape[1] - 1)
                    tokens += ids.shape[1] - 1
        if not tokens:
            raise UserError(f"forgetting text '{self.options.forgetting}' holds no text to measure")
        return total / tokens

    def harness_metrics(self, bundle: ModelBundle, recipe: Any, device: str) -> list[Metric]:
        """Every metric of every ``eval_tasks`` lm-eval task, named ``<task>:<metric>,<filter>``."""
        from suite.tasks.lm_eval_scoring import evaluate_in_memory

        results = evaluate_in_memory(bundle.model, bundle.tokenizer, self.options.eval_tasks, device,
                                     batch_size=recipe.eval_batch_size, max_length=recipe.max_length,
                                     limit=recipe.limit, apply_chat_template=self.uses_chat_template(bundle.tokenizer),
                                     include_path=self.options.lm_eval_include)
        lower = ("perplexity", "bits_per_byte", "loss")
        return [Metric(f"{r.task}:{name}", value, split="lm-eval",
                       higher_is_better=not any(word in name for word in lower))
                for r in results for name, value in r.metrics.items() if math.isfinite(value)]


def general_text(source: str, rows: int) -> list[str]:
    """The first ``rows`` non-empty documents of a local file (.txt: one per line; .jsonl / .json /
    .parquet: the ``text`` field) or of a hub dataset ``name[:config]`` (its test split)."""
    path = Path(source).expanduser()
    texts: list[str] = []
    if path.exists():
        if path.suffix == ".parquet":
            import pandas as pd

            texts = [str(t) for t in pd.read_parquet(path)["text"]]
        elif path.suffix in (".jsonl", ".json"):
            with open_text(str(path)) as fh:
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            texts.append(str(json.loads(line)["text"]))
                        except (ValueError, KeyError):
                            raise UserError(f"{path}, line {number}: expected a json object with a 'text' "
                                            f"field") from None
                    if len(texts) >= rows:
                        break
        else:
            with open_text(str(path)) as fh:
                texts = fh.read().splitlines()
    else:
        name, _, config = source.partition(":")
        try:
            from datasets import load_dataset

            dataset = load_dataset(name, config or None, split="test")
            texts = [str(row["text"]) for row in dataset.select(range(min(len(dataset), 20 * rows)))]
        except Exception as exc:
            raise UserError(f"cannot load forgetting text '{source}' ({type(exc).__name__}: {exc}); give a "
                            f"local .txt/.jsonl/.parquet file when the hub is not reachable") from None
    texts = [t for t in texts if t.strip()][:rows]
    if not texts:
        raise UserError(f"forgetting text '{source}' holds no non-empty rows")
    return texts
