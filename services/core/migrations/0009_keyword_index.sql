-- A blind keyword index (docs/ARCHITECTURE.md, "A blind keyword index"): per batch object and person, the keyed
-- tokens (HMAC under a key derived from the pepper, 64 bits) of the words of their messages in that object, never
-- the words. Written by the archiver in the index transaction; a search finds the (object, person) pairs holding
-- every token of the query, and the records themselves are checked once decrypted. Erased with the person (in the
-- transaction that destroys their keys), deleted with the object by retention.
CREATE TABLE keyword_index (
    object_key   text NOT NULL,
    subject_ref  bytea NOT NULL,
    tokens       bigint[] NOT NULL,
    PRIMARY KEY (object_key, subject_ref)
);
CREATE INDEX keyword_index_tokens ON keyword_index USING gin (tokens);
CREATE INDEX keyword_index_subject ON keyword_index (subject_ref);
