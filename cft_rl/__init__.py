"""cft-rl: Critical Token Fine-tuning and GRPO for math reasoning."""

__version__ = "0.1.0"
