"""txt2txt: text generation with a causal language model, a batch of prompts in one `generate` call.

Instruct models: a tokenizer with a chat template gets the prompt as the user's message (after the `system`
prompt, if given) and generation stops at the end-of-sequence or end-of-turn token.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from gpu_worker.stages import StageCancelled, StageHooks, StageItem, StageOutput
from gpu_worker.stages._torch import classified_failures, seed_of
from shared.errors import BadInput


class _StepReporter(StoppingCriteria):
    """Reports each generated token as a step and stops generation when every item was cancelled."""

    def __init__(self, hooks: StageHooks, prompt_length: int, max_new_tokens: int) -> None:
        self._hooks = hooks
        self._prompt_length = prompt_length
        self._max_new_tokens = max_new_tokens
        self.cancelled = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self._hooks.on_step(input_ids.shape[1] - self._prompt_length, self._max_new_tokens)
        self.cancelled = self._hooks.should_stop()
        stop = torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)
        return stop  # type: ignore[return-value]  # a bool tensor; torch has no BoolTensor constructor to say so


def encode_prompts(tokenizer: Any, items: list[StageItem]) -> Any:
    """The batch's prompts as model input: through the chat template (with `system`) when the tokenizer has one."""
    if not getattr(tokenizer, "chat_template", None):
        if any(item.params.get("system") for item in items):
            raise BadInput("this model has no chat template, so it takes no system prompt")
        return tokenizer([item.prompt for item in items], return_tensors="pt", padding=True)
    texts = [
        tokenizer.apply_chat_template(chat_messages(item), tokenize=False, add_generation_prompt=True) for item in items
    ]
    # The template already wrote the special tokens the model expects.
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def chat_messages(item: StageItem) -> list[dict[str, str]]:
    system = str(item.params.get("system") or "")
    return [{"role": "system", "content": system}] * bool(system) + [{"role": "user", "content": item.prompt}]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End of sequence: the tokenizer's EOS and the model's own (instruct models add an end-of-turn token)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None})


class TextToText:
    def warm_up_parameters(self) -> dict[str, Any]:
        return {"maxNewTokens": 2, "temperature": 0.0, "topP": 1.0}

    def run(self, items: list[StageItem], model_name: str, registry: Any, hooks: StageHooks) -> list[StageOutput]:
        model, tokenizer = registry.causal_lm(model_name)
        shared = items[0].params
        max_new_tokens, temperature = int(shared["maxNewTokens"]), float(shared["temperature"])
        context = int(getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 0))
        encoded = encode_prompts(tokenizer, items)
        prompt_length = encoded["input_ids"].shape[1]
        if context and prompt_length + max_new_tokens > context:
            raise BadInput(f"prompt ({prompt_length} tokens) + maxNewTokens exceeds the model's {context} tokens")
        reporter = _StepReporter(hooks, prompt_length, max_new_tokens)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": float(shared["topP"])}
        with classified_failures(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_of(items[0].params))
            generated = model.generate(
                **encoded.to(model.device),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([reporter]),
                eos_token_id=stop_token_ids(model, tokenizer),
                **sampling,
            )
        if reporter.cancelled:
            raise StageCancelled
        texts = tokenizer.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)
        return [StageOutput(texts=[text.strip()]) for text in texts]


RUNNER = TextToText()
