-- audit: hash-chain audit.events and make it append-only (DESIGN §5; agentbus.shared.audit).

-- `position` is the gap-free chain index. The trace sink assigns it under an advisory lock. `seq` is
-- a sequence, and a rolled-back insert leaves a gap in it, so it cannot show a deleted row.
-- hash = SHA-256(prev_hash || canonical record); the first row's prev_hash is 32 zero bytes.
ALTER TABLE audit.events
    ADD COLUMN position bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;

-- Rows written before this migration keep their order and get positions 1..n. Their hashes cannot
-- be computed in SQL (the canonical form is defined in Python), so they stay NULL. The trace sink
-- seals these rows, in position order, before it appends anything. The trigger below allows that
-- one UPDATE. On an empty table there is nothing to seal.
UPDATE audit.events e SET position = n.position
FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS position FROM audit.events) n
WHERE e.seq = n.seq;

ALTER TABLE audit.events
    ALTER COLUMN position SET NOT NULL,
    ADD CONSTRAINT events_position_key UNIQUE (position),
    ADD CONSTRAINT events_position_positive CHECK (position > 0),
    -- NOT VALID: binds every row inserted or sealed from now on; unsealed legacy rows are exempt.
    ADD CONSTRAINT events_chained CHECK (
        octet_length(hash) = 32 AND octet_length(prev_hash) = 32
    ) NOT VALID;

CREATE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Sealing a pre-chain row: it gains its hashes and nothing else changes.
        IF OLD.hash IS NULL AND NEW.hash IS NOT NULL
           AND to_jsonb(NEW) - 'prev_hash' - 'hash' = to_jsonb(OLD) - 'prev_hash' - 'hash' THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'rows are hash-chained; `agentbus audit verify` reports any change';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.reject_change();

-- A role that was granted these rights by name must have them revoked by name. The trigger is the
-- real guard, but the table's owner (like a superuser) can disable it. So in production the trace
-- sink should connect as a role that has only INSERT and SELECT here. The signed checkpoints
-- catch anyone who disables the trigger and rewrites or cuts the chain.
REVOKE UPDATE, DELETE, TRUNCATE ON audit.events FROM PUBLIC;
