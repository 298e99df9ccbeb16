-- pii: personal data taken out of tickets, encrypted per data subject (crypto-shredding vault).

CREATE SCHEMA IF NOT EXISTS pii;

-- One data key per subject, wrapped (AES-256-GCM) with the master key, which never lives here.
-- Deleting the row shreds every value encrypted with it.
CREATE TABLE pii.subject_keys (
    tenant_id text NOT NULL,
    subject_id text NOT NULL,
    wrapped_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_id)
);

-- The originals behind the tokens, encrypted with their subject's data key.
CREATE TABLE pii.values (
    tenant_id text NOT NULL,
    subject_id text NOT NULL,
    token text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('email', 'phone', 'card', 'iban', 'address')),
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, token)
);
CREATE INDEX values_subject ON pii.values (tenant_id, subject_id);
