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
"""

from __future__ import annotations

from typing import Any, ClassVar

from suite.errors import UserError
from suite.modeling import TINY_MODELS, resolve_model_path
from suite.task import EvalOutput, Metric, ModelBundle, Task

IGNORE_INDEX = -100  # labels the loss skips (transformers' convention)


class CausalLMTask(Task):
    """A task whose model is a causal LM that answers prompts by generating text."""

    objective = "causal-lm"
    primary_metric = "exact_match"
    max_new_tokens: ClassVar[int] = 32
    tiny_words: ClassVar[tuple[str, ...]] = ()

    # -- model --------------------------------------------------------------------------------
    def build_model(self, model_name: str) -> ModelBundle:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from suite.modeling import model_family, tiny_config, tiny_tokenizer

        if model_name in TINY_MODELS:
            tokenizer = tiny_tokenizer(self.tiny_words)
            tokenizer.eos_token = "[SEP]"
            config = tiny_config(model_name, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            try:
                model = AutoModelForCausalLM.from_config(config)
            except ValueError:
                raise UserError(f"'{model_name}' has no causal-LM form; use tiny-llama or a causal LM "
                                f"for task '{self.name}'") from None
        else:
            path = resolve_model_path(model_name)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path)
            except ValueError as exc:
                raise UserError(f"model '{model_name}' has no causal-LM head ({exc}); task '{self.name}' "
                                f"needs a causal LM (Llama, Qwen, Mistral, GPT-2, ...)") from None
            except OSError as exc:
                raise UserError(f"cannot load model '{model_name}': {exc}. Use a local model folder "
                                f"(--models /path/to/folder) when the Hugging Face hub is not reachable") from None
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

    def _prompt_ids(self, tokenizer: Any, prompt: str) -> list[int]:
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
        return [self.encode(e, bundle.tokenizer, recipe.max_length) for e in self.load("train", recipe.limit)]

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
                                       max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)
        return tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)

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
            generated: list[str] = []
            with torch.no_grad():
                for start in range(0, len(examples), recipe.eval_batch_size):
                    chunk = examples[start:start + recipe.eval_batch_size]
                    generated += self.generate(bundle, [e["prompt"] for e in chunk], device, recipe.max_length)
            extracted = [self.extract(g) for g in generated]
            correct = [float(self.is_correct(x, e)) for x, e in zip(extracted, examples, strict=True)]
            metrics.append(Metric(self.primary_metric, sum(correct) / len(correct), split=split,
                                  is_primary=split == self.eval_splits[0]))
            frames.append(pd.DataFrame({
                "split": split, "example_id": [e["id"] for e in examples], "prediction": extracted,
                "label": [str(e["target"]) for e in examples], "correct": correct, "generated": generated,
            }))
        if was_training:
            model.train()
        return EvalOutput(metrics=metrics, records=pd.concat(frames, ignore_index=True))
