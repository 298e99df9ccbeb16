"""Versioned event models (pydantic v2) for every agentbus topic, and their registry."""

from .actions import (
    ActionDecidedV1,
    ActionExecutedV1,
    ActionProposedV1,
    ActionVerifiedV1,
    Decision,
    Execution,
    Proposal,
    Verification,
)
from .control import ControlSwitchV1, DeadLetter, DeadLetterRecordedV1, Switch
from .envelope import Event, Model, Producer, new_event_id
from .outcomes import (
    ApprovalDecidedV1,
    ApprovalDecision,
    EscalationRequest,
    EscalationRequestedV2,
    TaskFinishedV2,
    TaskOutcome,
)
from .registry import EVENT_MODELS, REGISTRY, UPCASTERS, DecodeError, decode
from .tickets import Customer, TaskClassified, TaskClassifiedV2, TicketReceived, TicketReceivedV1
from .usage import ModelCall, PiiRef, Usage

__all__ = [
    "EVENT_MODELS",
    "REGISTRY",
    "UPCASTERS",
    "ActionDecidedV1",
    "ActionExecutedV1",
    "ActionProposedV1",
    "ActionVerifiedV1",
    "ApprovalDecidedV1",
    "ApprovalDecision",
    "ControlSwitchV1",
    "Customer",
    "DeadLetter",
    "DeadLetterRecordedV1",
    "Decision",
    "DecodeError",
    "EscalationRequest",
    "EscalationRequestedV2",
    "Event",
    "Execution",
    "Model",
    "ModelCall",
    "PiiRef",
    "Producer",
    "Proposal",
    "Switch",
    "TaskClassified",
    "TaskClassifiedV2",
    "TaskFinishedV2",
    "TaskOutcome",
    "TicketReceived",
    "TicketReceivedV1",
    "Usage",
    "Verification",
    "decode",
    "new_event_id",
]
