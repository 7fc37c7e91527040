-- Keyword search walks the messages in time order and stops at its page (services/review/search.py): for the words
-- most messages hold, the first page is among the first few thousand messages, where gathering every match and
-- sorting it read and sorted hundreds of thousands (bench/search.py: seconds on 1,000,000 messages). Searches on one
-- business number walk archived_events_phone_time; the others, every number or a reader's scope, need the messages'
-- own time order: this index, of the message kinds alone (the kinds a keyword search returns, as the search names
-- them), which a timestamp keeps appending at its right end. Building it reads the table once while writes wait; on
-- a large archive, build it beforehand with CREATE INDEX CONCURRENTLY (docs/OPERATIONS.md, "Upgrading").
CREATE INDEX IF NOT EXISTS archived_events_message_time ON archived_events (event_time)
    WHERE kind IN ('echo', 'history', 'message', 'outbound');
