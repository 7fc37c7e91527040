-- Legal holds on a Cloud API group (services/retention/holds.py): the group's pseudonym (group_ref, as
-- archived_events holds it since 0011), never its id. A group hold keeps every record of the group (every
-- participant's messages and the group's own updates) from retention and blocks a participant's erasure while they
-- have records in the group.
ALTER TABLE legal_holds DROP CONSTRAINT legal_holds_scope_check;
ALTER TABLE legal_holds ADD CONSTRAINT legal_holds_scope_check
    CHECK (scope IN ('waba', 'phone_number', 'contact', 'conversation', 'group'));
ALTER TABLE legal_holds ADD COLUMN group_ref bytea;
ALTER TABLE legal_holds ADD CONSTRAINT legal_holds_group_has_ref CHECK ((scope = 'group') = (group_ref IS NOT NULL));
