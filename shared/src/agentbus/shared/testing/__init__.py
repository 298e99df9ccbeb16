"""Helpers for tests: a stack started in-process or as subprocesses, and event builders."""
