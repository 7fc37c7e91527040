"""The read side: what an authorised person finds and reads again.

Here: a person's conversation and a group's timeline assembled from the archive (``conversation``), search over
the index (``search``, metadata only, nothing decrypted) and the subject-access export (``export``).
Every read that decrypts writes its audit row first (services/core/audit.py) and goes through the action layer
(services/actions/); nothing here deletes, shreds or holds anything (that is services/governance/), and nothing
here renders HTML or terminal text (the console and the CLI do).
"""
