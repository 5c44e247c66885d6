"""The one verifier: scores model answers for identification, RL reward and evaluation."""

from reward.extract import extract_final_answer
from reward.score import compute_score
from reward.verifier import Verdict, Verifier

__all__ = ["Verdict", "Verifier", "compute_score", "extract_final_answer"]
