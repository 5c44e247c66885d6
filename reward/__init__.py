"""The one verifier: scores model answers for identification, RL reward and evaluation."""
