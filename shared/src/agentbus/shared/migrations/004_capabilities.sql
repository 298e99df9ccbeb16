-- executor: each capability is used once. A redelivery of the same decision event is not a replay
-- (it gets the stored result); the same capability inside any other event is refused.
CREATE TABLE executor.capability_uses (
    jti text PRIMARY KEY,
    action_id text NOT NULL,
    decision_event_id text NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now()
);
