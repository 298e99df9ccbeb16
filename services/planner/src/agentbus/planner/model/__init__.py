"""The model planner (OpenAI-compatible function calling) and its policy-document retrieval."""

from .planner import ModelPlanner
from .retrieval import PolicyIndex, PolicyLibrary, Section, parse_sections

__all__ = ["ModelPlanner", "PolicyIndex", "PolicyLibrary", "Section", "parse_sections"]
