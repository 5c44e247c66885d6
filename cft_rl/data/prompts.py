"""Prompt templates: how a question becomes the text a model continues."""

from __future__ import annotations

from cft_rl.data.example import DataError, Example

BOXED_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."

# template name -> what follows the question in the user turn
TEMPLATES: dict[str, str] = {
    "toy": "",  # the toy model was trained on bare questions
    "boxed": BOXED_INSTRUCTION,
}


def check_template(template: str) -> None:
    """A DataError unless `template` names one of TEMPLATES."""
    if template not in TEMPLATES:
        raise DataError(f"unknown prompt template '{template}' (known: {', '.join(TEMPLATES)})")


def format_prompt(tokenizer, question: str, template: str) -> str:
    """The chat-formatted prompt (ending with the assistant turn's opening) for `question`."""
    check_template(template)
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "the tokenizer")
        raise DataError(f"{name} has no chat template, which prompt template '{template}' needs")
    messages = [{"role": "user", "content": question + TEMPLATES[template]}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(
    tokenizer, examples: list[Example], template: str, max_prompt_tokens: int | None = None
) -> list[list[int]]:
    """Token ids of each example's chat-formatted prompt; prompts over `max_prompt_tokens`
    (when given) are an error."""
    encoded = []
    for example in examples:
        text = format_prompt(tokenizer, example.question, template)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            raise DataError(
                f"example {example.id}: prompt has {len(ids)} tokens, more than "
                f"data.max_prompt_tokens={max_prompt_tokens}"
            )
        encoded.append(ids)
    return encoded
