"""One GRPO step's samples: the step's questions, `rollout.n` responses to each from the hf
backend (sharing the policy's weights), and the rewards of the pooled verifier."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cft_rl.data import Example
from cft_rl.generation import FINISH_LENGTH, SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.grpo.config import RolloutSettings
from cft_rl.grpo.prompts import PromptSchedule
from reward import Verifier

# responses (texts), the questions they answer -> one reward per response
Scorer = Callable[[list[str], list[Example]], list[float]]


@dataclass
class Rollouts:
    """One step's sequences, flattened prompt-major: `group[i]` is the prompt of sequence i."""

    prompts: list[list[int]] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)  # the question each answers
    group: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def lengths(self) -> list[int]:
        """Tokens of each response."""
        return [len(response) for response in self.responses]


class VerifierScorer:
    """The reward: 1.0 for a verified correct final answer, else 0.0 (reward.Verifier)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    def __call__(self, responses: list[str], examples: list[Example]) -> list[float]:
        verdicts = self.verifier.verify_batch(
            responses, [e.answer for e in examples], [e.choices for e in examples]
        )
        return [verdict.score for verdict in verdicts]

    def close(self) -> None:
        self.verifier.close()


class RolloutSampler:
    """The responses of each step: which questions (`schedule`), sampled how (`settings`,
    seeded by run seed and step only, so a resumed run samples what it would have)."""

    def __init__(
        self,
        backend: HFBackend,
        settings: RolloutSettings,
        prompt_ids: list[list[int]],
        examples: list[Example],
        schedule: PromptSchedule,
        seed: int,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.prompt_ids = prompt_ids
        self.examples = examples
        self.schedule = schedule
        self.seed = seed

    def sample(self, step: int) -> Rollouts:
        """`rollout.n` sampled responses for each of step `step`'s questions."""
        indices = self.schedule.indices(step)
        params = self.sampling(n=self.settings.n, seed=step_seed(self.seed, step))
        results = self.backend.generate([self.prompt_ids[i] for i in indices], params)
        rollouts = Rollouts()
        for group, (index, completions) in enumerate(zip(indices, results, strict=True)):
            for completion in completions:
                rollouts.prompts.append(self.prompt_ids[index])
                rollouts.responses.append(completion.token_ids)
                rollouts.texts.append(completion.text)
                rollouts.examples.append(self.examples[index])
                rollouts.group.append(group)
                rollouts.truncated.append(completion.finish_reason == FINISH_LENGTH)
        return rollouts

    def sampling(self, n: int, seed: int) -> SamplingParams:
        """The rollout's temperature, top_p and budget, `n` samples per prompt."""
        r = self.settings
        return SamplingParams(
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            n=n,
            seed=seed,
        )


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of one step: a function of the run seed and the step only."""
    return _seed_from(f"grpo:{seed}:{step}")


def validation_seed(seed: int) -> int:
    """The sampling seed of every validation pass, whatever the run's seed."""
    return _seed_from(f"grpo-validation:{seed}")


def _seed_from(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


def group_spread(scores: torch.Tensor, group: list[int]) -> torch.Tensor:
    """Max minus min score of each group: 0 means the group carries no learning signal."""
    ids = torch.tensor(group)
    return torch.stack(
        [scores[ids == g].max() - scores[ids == g].min() for g in sorted(set(group))]
    )
