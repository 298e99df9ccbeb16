-- audit: chain format 2, whose links cover a digest of the event, so that retention can drop expired
-- event bodies without breaking the chain (DESIGN §4 Data, §5; agentbus.shared.audit).

-- Rows already hashed keep format 1: their hash covers the whole event, so they cannot be purged. That
-- is reported, not hidden: `agentbus audit retention` counts the format-1 rows it keeps. Rows still
-- waiting to be sealed (from before 007) are sealed as format 2. The default is dropped after the
-- backfill, so every writer has to name the format it hashed with.
ALTER TABLE audit.events
    ADD COLUMN chain_version smallint NOT NULL DEFAULT 1,
    ADD COLUMN event_digest bytea,
    ALTER COLUMN event DROP NOT NULL;
ALTER TABLE audit.events
    ALTER COLUMN chain_version DROP DEFAULT,
    ADD CONSTRAINT events_chain_version CHECK (chain_version IN (1, 2)),
    ADD CONSTRAINT events_digest CHECK (chain_version = 1 OR hash IS NULL OR octet_length(event_digest) = 32),
    -- Only a format-2 row can lose its event, and it keeps the digest its link covers.
    ADD CONSTRAINT events_body CHECK (event IS NOT NULL OR (chain_version = 2 AND event_digest IS NOT NULL));

-- Retention looks up a tenant's rows by age.
CREATE INDEX events_tenant_recorded_idx ON audit.events (tenant_id, recorded_at);

CREATE OR REPLACE FUNCTION audit.reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Sealing a pre-chain row: it gains its hashes, format and digest, and nothing else changes.
        IF OLD.hash IS NULL AND NEW.hash IS NOT NULL
           AND to_jsonb(NEW) - 'prev_hash' - 'hash' - 'chain_version' - 'event_digest'
             = to_jsonb(OLD) - 'prev_hash' - 'hash' - 'chain_version' - 'event_digest' THEN
            RETURN NEW;
        END IF;
        -- Retention (audit.purge_expired): a format-2 row loses its event and nothing else. The setting
        -- only keeps this from happening by accident. Anyone can set it in their session, so it is not
        -- a permission: the permission is UPDATE on this table, which no role but the owner should
        -- hold, and `verify` reports any purge that no retention record in the chain covers.
        IF current_setting('agentbus.audit_purge', true) = 'on'
           AND OLD.chain_version = 2 AND OLD.event IS NOT NULL AND NEW.event IS NULL
           AND to_jsonb(NEW) - 'event' = to_jsonb(OLD) - 'event' THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'rows are hash-chained; `agentbus audit verify` reports any change';
END
$$;

-- Purge the events of `tickets` of one tenant, as the retention record `record_id` says. That record
-- must be a chain row written by this same transaction, so there is never a purge without the audit
-- row that names it (tenant, cutoff, counts, actor). Every row of those tickets must be older than
-- the record's cutoff, and the number of rows purged must be the number the record states; otherwise
-- nothing is purged. SECURITY DEFINER: callers need EXECUTE on this function, never UPDATE on the table.
CREATE FUNCTION audit.purge_expired(record_id text, tickets text[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retention jsonb;
    tenant text;
    cutoff timestamptz;
    purged bigint;
BEGIN
    SELECT e.event, e.tenant_id INTO retention, tenant FROM audit.events e
    WHERE e.event_id = record_id AND e.type = 'audit.retention' AND e.event IS NOT NULL
      AND e.xmin = pg_current_xact_id()::xid;
    IF retention IS NULL OR tenant IS NULL THEN
        RAISE EXCEPTION 'no retention record % written by this transaction', record_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    cutoff := (retention #>> '{payload,cutoff}')::timestamptz;
    IF EXISTS (SELECT 1 FROM audit.events e
               WHERE e.tenant_id = tenant AND e.ticket_id = ANY(tickets) AND e.recorded_at >= cutoff) THEN
        RAISE EXCEPTION 'a ticket to purge has events recorded at or after the cutoff %', cutoff
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('agentbus.audit_purge', 'on', true);
    UPDATE audit.events e SET event = NULL
    WHERE e.tenant_id = tenant AND e.ticket_id = ANY(tickets) AND e.event IS NOT NULL
      AND e.chain_version = 2 AND e.type <> 'audit.retention';
    GET DIAGNOSTICS purged = ROW_COUNT;
    PERFORM set_config('agentbus.audit_purge', '', true);
    IF purged <> (retention #>> '{payload,rows_purged}')::bigint THEN
        RAISE EXCEPTION 'purged % rows but the retention record says %', purged,
            retention #>> '{payload,rows_purged}';
    END IF;
    RETURN purged;
END
$$;
REVOKE ALL ON FUNCTION audit.purge_expired(text, text[]) FROM PUBLIC;
