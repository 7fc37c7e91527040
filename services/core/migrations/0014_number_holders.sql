-- A customer's number change (the `system` message `user_changed_number`, services/core/holders.py): from `since`
-- on, the old number's records belong to whoever holds it next and are sealed under that holder's pseudonym, so a
-- recycled number never files a stranger under the first person. `number_ref` is the old number's first
-- pseudonym under its business number, never the number. The rows outlive the first person's erasure: they say
-- when the number changed hands, which protects its next holder, and nothing the person said or did.
CREATE TABLE IF NOT EXISTS number_holders (
    number_ref  text NOT NULL,
    since       timestamptz NOT NULL,
    PRIMARY KEY (number_ref, since)
);
