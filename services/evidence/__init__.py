"""Evidence: what the archive hands over (exports: PDF transcripts, RSMF, JSON Lines, media, signed BagIt bags)
and what proves it was not altered (the hash chain of archived objects, signed checkpoints, verification).

Every renderer here takes the same input: the messages as the read side assembled them
(:class:`services.review.assembly.ConversationMessage`, in time order), the decrypted media written to files
beforehand (:class:`MediaFiles`, streamed from the bucket, never held whole in memory), and an
:class:`ExportHeader` saying what the export is, for whom and why.
"""
