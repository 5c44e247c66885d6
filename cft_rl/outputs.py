"""The files one stage writes into its output_dir and another stage or a report reads.

They are named here, once, so that a reader needs nothing of the stage that wrote them
(the per-step JSONL logs are named in cft_rl.jsonl).
"""

# `cft-rl identify`: the critical-token dataset and the run's summary.
IDENTIFY_DATASET = "critical_tokens.parquet"
IDENTIFY_SUMMARY = "summary.json"
# `cft-rl sft` and `cft-rl grpo`: the Hugging Face export of the trained model.
HF_EXPORT = "hf_model"
# `cft-rl sft`, next to OUT/hf_model: which checkpoint it is, and its validation result.
EXPORT_INFO = "export.json"
# `cft-rl eval`: accuracy and pass@k per benchmark.
EVAL_SUMMARY_JSON = "summary.json"
EVAL_SUMMARY_MD = "summary.md"
# `cft-rl experiment`: the grid's cells and learning-rate choices, and per cell
# (OUT/<cell>/) the marker written when its stage has exited cleanly.
EXPERIMENT_PLAN = "plan.json"
CELL_DONE = "cell.json"
