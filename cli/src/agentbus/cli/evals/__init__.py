"""Eval suites: golden and adversarial tasks through the real pipeline, scored against a baseline."""
