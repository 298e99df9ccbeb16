-- Demo directory (stand-in for an identity provider): users, groups, memberships, password resets.
-- Like the other systems of record, every write is keyed by the action's idempotency key.

CREATE TABLE sor.directory_users (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    email text NOT NULL,
    name text NOT NULL,
    manager_id text REFERENCES sor.directory_users(id),
    status text NOT NULL CHECK (status IN ('active', 'disabled'))
);
CREATE TABLE sor.directory_groups (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    admin boolean NOT NULL DEFAULT false
);
CREATE TABLE sor.group_memberships (
    user_id text NOT NULL REFERENCES sor.directory_users(id),
    group_id text NOT NULL REFERENCES sor.directory_groups(id),
    -- the idempotency key of the action that granted it; NULL for a grant made outside agentbus
    granted_by_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, group_id)
);
-- The directory mails the secret link itself; this table holds no token, only the fact of the link.
CREATE TABLE sor.password_reset_links (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES sor.directory_users(id),
    idempotency_key text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
