-- Messages of the event stream that no reader can use, quarantined by the
-- projector (issue 12 item 5): they do not decode (not JSON, another
-- schema, an unknown event type, larger than 256 KiB) or are misaddressed
-- (an envelope naming another workspace than its evt.<workspace> subject,
-- an outcome naming another command than its out.<command id>). The engine
-- never writes one: each is corruption or a forgery. The projector skips
-- it (the checkpoint passes it) and records it here in the same
-- transaction. Like the rest of the read model it is rebuilt from the
-- stream, so it holds only what the stream says (no wall-clock column).

-- +goose Up
CREATE TABLE dead_letters (
    stream_seq  bigint PRIMARY KEY,                 -- position in the stream
    subject     text NOT NULL,                      -- where it was published
    reason      text NOT NULL,                      -- malformed, unknown_type, future_schema, too_large, misaddressed
    error       text NOT NULL,                      -- what the decoder said
    size        bigint NOT NULL,                    -- bytes of the whole message
    data        bytea NOT NULL,                     -- its first 4096 bytes
    stream_time timestamptz NOT NULL                -- when the stream stored it
);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, stream_seq);

-- +goose Down
DROP TABLE dead_letters;
