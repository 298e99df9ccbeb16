"""The approvals API described as OpenAPI 3.1 (served at /openapi.json; its schemas are JSON Schema
2020-12, so the tests also validate live responses against them)."""

from __future__ import annotations

from typing import Any

from .approvals import STATUSES


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_ERRORS = {
    "401": _json("Error", "No bearer token, or one that matches no identity."),
    "404": _json("Error", "No approval with this id."),
}

_APPROVAL_ID = {
    "name": "approval_id",
    "in": "path",
    "required": True,
    "description": "Approval id, `AP-` followed by 10 hex digits.",
    "schema": {"type": "string", "pattern": "^AP-[0-9A-F]{10}$"},
}


def _decide(verb: str, effect: str) -> dict[str, Any]:
    required = verb == "reject"
    return {
        "operationId": f"{verb}Approval",
        "summary": f"{verb.capitalize()} a pending approval",
        "description": (
            f"{effect} The caller must hold the approval's `required_role`. The decision is committed "
            "first (only one decision can win), then published as `approval.decided`; policy turns it "
            "into the action's final verdict."
        ),
        "parameters": [_APPROVAL_ID],
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{'Reject' if required else 'Approve'}Request"}
                }
            },
        },
        "responses": {
            "200": _json(
                "Approval", f"The approval, now {verb}ed (`published`: whether the event was sent yet)."
            ),
            "400": _json("Error", "The body is not a JSON object of the documented shape."),
            **_ERRORS,
            "403": _json("Forbidden", "The identity lacks the approval's required role; nothing changed."),
            "409": _json("Error", "The approval is not pending any more (approved, rejected or expired)."),
        },
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "agentbus approvals",
        "version": "1.0.0",
        "summary": "Approve or reject actions that policy sent for human approval.",
        "description": (
            "Served by the escalation service. Every call except this document and `/healthz` needs "
            "`Authorization: Bearer <token>`; tokens map to an identity and its roles in "
            "`identities.toml`. Any known identity may read approvals; deciding one needs the role it "
            "names in `required_role`."
        ),
    },
    "security": [{"bearerAuth": []}],
    "tags": [{"name": "approvals", "description": "Pending and decided approvals."}],
    "paths": {
        "/approvals": {
            "get": {
                "operationId": "listApprovals",
                "tags": ["approvals"],
                "summary": "List approvals, newest first",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "description": "Only approvals in this status (default: all).",
                        "schema": {"type": "string", "enum": [*STATUSES, "all"]},
                    }
                ],
                "responses": {
                    "200": _json("ApprovalList", "The approvals."),
                    "400": _json("Error", "Unknown status."),
                    "401": _ERRORS["401"],
                },
            }
        },
        "/approvals/{approval_id}": {
            "get": {
                "operationId": "getApproval",
                "tags": ["approvals"],
                "summary": "One approval: the exact change, why it waits, and who decided it",
                "parameters": [_APPROVAL_ID],
                "responses": {"200": _json("Approval", "The approval."), **_ERRORS},
            }
        },
        "/approvals/{approval_id}/approve": {
            "post": {
                "tags": ["approvals"],
                **_decide("approve", "Releases exactly the proposed action, if policy still agrees."),
            }
        },
        "/approvals/{approval_id}/reject": {
            "post": {
                "tags": ["approvals"],
                **_decide("reject", "Refuses the action; the ticket is escalated (`approval_rejected`)."),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The service is up.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"ok": {"const": True}},
                                    "required": ["ok"],
                                }
                            }
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from identities.toml (demo: see policies/identities.toml).",
            }
        },
        "schemas": {
            "Approval": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "id",
                    "status",
                    "ticket_id",
                    "tenant_id",
                    "action_id",
                    "workflow",
                    "tool",
                    "agent",
                    "args",
                    "idempotency_key",
                    "rationale",
                    "preview",
                    "reason",
                    "rule_ids",
                    "policy_version",
                    "required_role",
                    "created_at",
                    "expires_at",
                    "approver",
                    "decided_reason",
                    "decided_at",
                    "published",
                ],
                "properties": {
                    "id": {"type": "string", "examples": ["AP-3F2A9C01BE"]},
                    "status": {"type": "string", "enum": list(STATUSES)},
                    "ticket_id": {"type": "string"},
                    "tenant_id": {"type": ["string", "null"]},
                    "action_id": {"type": "string"},
                    "workflow": {"type": "string"},
                    "tool": {"type": "string", "examples": ["payments.issue_refund"]},
                    "agent": {"type": "string", "description": "Principal the action runs as."},
                    "args": {
                        "type": "object",
                        "description": "The exact arguments the tool will be called with.",
                        "examples": [{"order_id": "ORD-1002", "amount_cents": 4000, "currency": "USD"}],
                    },
                    "idempotency_key": {"type": "string", "description": "One effect per key."},
                    "rationale": {"type": "string"},
                    "preview": {"type": "string", "description": "Diff-like text of the change."},
                    "reason": {"type": "string", "description": "Why policy asked for approval."},
                    "rule_ids": {"type": "array", "items": {"type": "string"}},
                    "policy_version": {"type": ["string", "null"]},
                    "required_role": {"type": "string", "examples": ["refund-approver"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "approver": {"type": ["string", "null"], "examples": ["user:alice"]},
                    "decided_reason": {"type": ["string", "null"]},
                    "decided_at": {"type": ["string", "null"], "format": "date-time"},
                    "published": {
                        "type": ["boolean", "null"],
                        "description": "Decided approvals: whether the broker acknowledged the event.",
                    },
                },
            },
            "ApprovalList": {
                "type": "object",
                "additionalProperties": False,
                "required": ["approvals"],
                "properties": {
                    "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"}}
                },
            },
            "ApproveRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"reason": {"type": "string", "maxLength": 2000}},
            },
            "RejectRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["reason"],
                "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
            },
            "Error": {
                "type": "object",
                "required": ["error", "reason"],
                "properties": {
                    "error": {
                        "type": "string",
                        "enum": ["bad_request", "unauthorized", "forbidden", "not_found", "conflict"],
                    },
                    "reason": {"type": "string", "description": "What went wrong, for a person."},
                    "status": {"type": "string", "description": "409: the approval's current status."},
                },
            },
            "Forbidden": {
                "allOf": [{"$ref": "#/components/schemas/Error"}],
                "type": "object",
                "required": ["required_role", "identity", "roles"],
                "properties": {
                    "required_role": {"type": "string"},
                    "identity": {"type": "string"},
                    "roles": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
