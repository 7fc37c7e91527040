"""What the law asks of the archive's data: how long it lives and when it must go.

Here: legal holds (``holds``), GDPR erasure by crypto-shredding (``erasure``, with its refusal ``grounds``), the
retention run that deletes expired objects (``retention_run``) and the metrics of that work (``metrics``). These
modules decide and write; they are called through the action layer (services/actions/), which checks roles and
writes the audit rows of operators' actions. Nothing here decrypts a record for display (that is
services/review/) or speaks HTTP (the admin API is services/retention/api/, the console services/console/).
"""
