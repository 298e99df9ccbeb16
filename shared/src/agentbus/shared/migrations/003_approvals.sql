-- escalation: approvals are decided by people (API/CLI) or expire; each decision is published from
-- the row itself (transactional outbox), so a decision committed here is never lost on the way to
-- Kafka.

ALTER TABLE escalation.approvals
    -- The needs_approval action.decided event this approval answers (ticket, tenant, step, trace).
    ADD COLUMN decision_event jsonb,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN approver text,
    ADD COLUMN decided_reason text,
    ADD COLUMN decided_at timestamptz,
    -- The event the decision publishes: approval.decided (approved/rejected) or
    -- escalation.requested (expired). Republished with the same event id until `published`.
    ADD COLUMN outcome_event jsonb,
    ADD COLUMN published boolean NOT NULL DEFAULT false;

ALTER TABLE escalation.approvals DROP CONSTRAINT IF EXISTS approvals_status_check;
ALTER TABLE escalation.approvals ADD CONSTRAINT approvals_status_check
    CHECK (status IN ('pending', 'approved', 'rejected', 'expired'));

-- A decided row carries who or what decided it and the event that announces it.
ALTER TABLE escalation.approvals ADD CONSTRAINT approvals_decided_check
    CHECK (status = 'pending' OR (decided_at IS NOT NULL AND outcome_event IS NOT NULL)) NOT VALID;

-- Approvals recorded before this migration get the default time to live from their creation.
UPDATE escalation.approvals SET expires_at = created_at + interval '1 hour' WHERE expires_at IS NULL;
ALTER TABLE escalation.approvals ALTER COLUMN expires_at SET NOT NULL;

CREATE INDEX approvals_pending_idx ON escalation.approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_unpublished_idx ON escalation.approvals (decided_at)
    WHERE status <> 'pending' AND NOT published;
