-- The grants of what arrived beside 0017 (least privilege, see 0017_roles.sql): the console's sign-in throttle (0015,
-- granted there only where the role already existed), the archiver's in-flight ledger
-- (0018, services/archiver/inflight.py) is the archiver's alone, and the KEK rewrap (`wa-archive keys rewrap`, an
-- action of retention and its CLI: services/core/keyring.py) moves a wrapped key under another KEK, which updates
-- kek_id and wrapped_dek and locks the rows FOR UPDATE. Nothing else of a key may change: subject_ref and dek_id
-- stay as they were created.
GRANT SELECT, INSERT, UPDATE, DELETE ON archiver_inflight TO wa_archiver;
GRANT UPDATE (kek_id, wrapped_dek) ON subject_keys TO wa_retention;
GRANT SELECT, INSERT, UPDATE, DELETE ON console_signin_throttle TO wa_console;
