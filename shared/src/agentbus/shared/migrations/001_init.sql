-- agentbus initial schema: one Postgres schema per owner; services never read each other's.

-- Demo systems of record (stand-ins for the shop, payments, carrier and helpdesk).
CREATE SCHEMA IF NOT EXISTS sor;
CREATE TABLE sor.customers (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    email text NOT NULL,
    name text NOT NULL
);
CREATE TABLE sor.orders (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    customer_id text NOT NULL REFERENCES sor.customers(id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    currency text NOT NULL DEFAULT 'USD',
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sor.refunds (
    id text PRIMARY KEY,
    order_id text NOT NULL REFERENCES sor.orders(id),
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    currency text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sor.return_labels (
    id text PRIMARY KEY,
    order_id text NOT NULL REFERENCES sor.orders(id),
    carrier text NOT NULL,
    tracking_number text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sor.tickets (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    status text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE sor.ticket_replies (
    id text PRIMARY KEY,
    ticket_id text NOT NULL,
    body text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- planner: task state per ticket
CREATE SCHEMA IF NOT EXISTS planner;
CREATE TABLE planner.tasks (
    ticket_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    workflow text NOT NULL,
    state text NOT NULL,
    step integer NOT NULL,
    pending_action_id text,
    context jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- policy: one decision per action, so a redelivered proposal gets the same answer
CREATE SCHEMA IF NOT EXISTS policy;
CREATE TABLE policy.decisions (
    action_id text PRIMARY KEY,
    ticket_id text,
    decision jsonb NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);

-- executor: effect ledger (one effect per idempotency key)
CREATE SCHEMA IF NOT EXISTS executor;
CREATE TABLE executor.effects (
    idempotency_key text PRIMARY KEY,
    action_id text NOT NULL,
    tool text NOT NULL,
    status text NOT NULL CHECK (status IN ('started', 'succeeded', 'failed', 'unknown')),
    result jsonb,
    error text,
    attempts integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- escalation: handoffs to humans and pending approvals
CREATE SCHEMA IF NOT EXISTS escalation;
CREATE TABLE escalation.handoffs (
    id text PRIMARY KEY,
    ticket_id text NOT NULL,
    tenant_id text,
    reason text NOT NULL,
    summary text NOT NULL,
    details jsonb NOT NULL,
    rule_ids jsonb NOT NULL,
    status text NOT NULL DEFAULT 'open',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ticket_id, reason)
);
CREATE TABLE escalation.approvals (
    id text PRIMARY KEY,
    action_id text NOT NULL UNIQUE,
    ticket_id text NOT NULL,
    tenant_id text,
    proposal jsonb NOT NULL,
    preview text NOT NULL,
    required_role text NOT NULL,
    reason text NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- audit: every event from every topic, append-only (hash chain comes with the audit issue)
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE audit.events (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    type text NOT NULL,
    version integer NOT NULL,
    ticket_id text,
    tenant_id text,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    event jsonb NOT NULL
);
CREATE INDEX events_ticket_idx ON audit.events (ticket_id, seq);
