"""Model access for planner and intake: configuration, the OpenAI-compatible client, prices and
prompt templates."""

from .client import Completion, ModelClient, ModelUnavailable
from .config import Endpoint, IntakeModels, ModelsConfig, WorkflowModels, load_models
from .prompts import PromptTemplate, fence, load_template

__all__ = [
    "Completion",
    "Endpoint",
    "IntakeModels",
    "ModelClient",
    "ModelUnavailable",
    "ModelsConfig",
    "PromptTemplate",
    "WorkflowModels",
    "fence",
    "load_models",
    "load_template",
]
