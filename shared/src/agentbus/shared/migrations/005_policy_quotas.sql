-- policy: usage that must hold across every replica of the decider (row locks, one transaction
-- with the decision itself).

-- Per task (ticket): loop cap and model usage.
CREATE TABLE policy.task_usage (
    ticket_id text PRIMARY KEY,
    tool_calls integer NOT NULL DEFAULT 0,
    model_calls integer NOT NULL DEFAULT 0,
    tokens bigint NOT NULL DEFAULT 0,
    spend_microdollars bigint NOT NULL DEFAULT 0
);

-- Per tenant and tool, per minute.
CREATE TABLE policy.rate_windows (
    tenant_id text NOT NULL,
    tool text NOT NULL,
    window_start timestamptz NOT NULL,
    calls integer NOT NULL,
    PRIMARY KEY (tenant_id, tool, window_start)
);

-- Per tenant per day: `used` counts reserved and settled amounts; a release gives it back.
CREATE TABLE policy.budget_usage (
    tenant_id text NOT NULL,
    day date NOT NULL,
    budget text NOT NULL,
    used bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, budget)
);
CREATE TABLE policy.budget_reservations (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    day date NOT NULL,
    budget text NOT NULL,
    amount bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('reserved', 'settled', 'released')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
