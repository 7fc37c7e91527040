"""The read side: what an authorised person finds and reads again.

Here: the index queries (``queries``), which records a page decrypts (``paging``), records assembled into messages
(``assembly``), what a message shows (``display``: the one answer the console, the CLI and the export render), a
person's conversation and a group's timeline read from the archive (``conversation``), search over the index
(``search``, metadata only, nothing decrypted) and the subject-access export (``export``). Every read that decrypts
goes through services/core/audit.py ``audited_decrypt`` (its audit rows first) and is reached through the action
layer (services/actions/); nothing here deletes, shreds or holds anything (that is services/governance/), and
nothing here renders the console's HTML or the terminal's tables (the console and the CLI do).
"""
