-- The read model the projector folds the TURNSTILE_EVENTS stream into.
-- Everything here can be rebuilt from the stream (turnstile rebuild),
-- workspaces.container_id included (the provisioned event names it).
-- Unqualified names: the projector builds a fresh copy in another schema
-- through search_path.

-- +goose Up
CREATE TABLE workspaces (
    id                   text PRIMARY KEY,
    status               text NOT NULL,             -- provisioning, running, stopping, stopped, failed, deleting, deleted
    generation           bigint NOT NULL,           -- current attempt
    spec_version         bigint NOT NULL,           -- newest spec
    attempt_spec_version bigint NOT NULL,           -- spec the latest provisioning attempt runs with
    spec                 jsonb NOT NULL,
    image                text NOT NULL DEFAULT '',
    container_id         text,
    last_error           text,                      -- reason of the latest failure; kept after recovery
    last_event_seq       bigint NOT NULL,           -- per-workspace event sequence this row reflects
    last_stream_seq      bigint NOT NULL,           -- stream sequence of that event
    created_at           timestamptz NOT NULL,      -- latest workspace.created (a deleted id can be created again)
    updated_at           timestamptz NOT NULL,      -- time of the latest event
    status_changed_at    timestamptz NOT NULL,      -- time the status last changed
    deleted_at           timestamptz                -- set while status = 'deleted'
);
CREATE INDEX workspaces_status_idx ON workspaces (status, status_changed_at);
CREATE INDEX workspaces_updated_idx ON workspaces (status, updated_at);

CREATE TABLE workspace_events (
    stream_seq   bigint PRIMARY KEY,                -- position in the stream: the global order
    event_id     text NOT NULL,
    workspace_id text NOT NULL,
    seq          bigint NOT NULL,                   -- per-workspace, from 1
    type         text NOT NULL,                     -- workspace.created, workspace.provisioned, ...
    generation   bigint NOT NULL,                   -- after the event
    spec_version bigint NOT NULL,                   -- after the event
    from_status  text NOT NULL,                     -- 'none' before the first event
    to_status    text NOT NULL,
    reason       text,                              -- failures and follow-up attempts
    exit_code    integer,                           -- workspace.container_exited
    payload      jsonb NOT NULL,                    -- spec, reason, exit_code as recorded
    command_id   text NOT NULL,
    actor        text,
    time         timestamptz NOT NULL
);
-- Not unique: the stream's per-workspace CAS already guarantees it, and a
-- uniqueness violation here would stall the projector rather than inform.
CREATE INDEX workspace_events_workspace_idx ON workspace_events (workspace_id, seq);
CREATE INDEX workspace_events_workspace_time_idx ON workspace_events (workspace_id, time);
CREATE INDEX workspace_events_type_time_idx ON workspace_events (type, time);

CREATE TABLE commands (
    command_id         text PRIMARY KEY,
    workspace_id       text NOT NULL,
    type               text NOT NULL,               -- create, start, ..., provision_succeeded, ...
    actor              text,
    received_at        timestamptz NOT NULL,
    decided_at         timestamptz NOT NULL,
    outcome            text NOT NULL,               -- accepted, noop, rejected, stale
    rejection_code     text,                        -- not_found, exists, busy, gone, invalid
    rejection_message  text,
    reason             text,                        -- why stale or no-op
    event_stream_seq   bigint,                      -- the event it recorded (accepted)
    event_seq          bigint,
    generation         bigint NOT NULL,             -- the workspace's, after the command
    command_generation bigint,                      -- the generation a system command reported on
    state              text NOT NULL,               -- the workspace's status after the command
    outcome_stream_seq bigint NOT NULL
);
CREATE INDEX commands_workspace_idx ON commands (workspace_id, received_at);
CREATE INDEX commands_outcome_idx ON commands (outcome, received_at);

CREATE TABLE projector_checkpoint (
    name       text PRIMARY KEY,
    stream_seq bigint NOT NULL,                     -- last stream sequence applied
    msg_time   timestamptz,                         -- stream time of that message
    updated_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE projector_checkpoint;
DROP TABLE commands;
DROP TABLE workspace_events;
DROP TABLE workspaces;
