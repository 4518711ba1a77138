"""Evaluation: lm-evaluation-harness tasks and HumanEval on one model, then eval.json and the leaderboard."""
