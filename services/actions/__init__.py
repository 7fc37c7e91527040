"""The one action layer: every operator action, once, over everything it needs opened once (``access``).

The admin API (services/retention/api/), the ``wa-archive`` CLI (services/cli/), the console (services/console/) and
the scheduler are adapters over :class:`services.actions.layer.Actions`, one object made of the reading
(``reading``), governance (``governing``) and maintenance (``maintenance``) actions: roles (``operators``), reasons
and audit rows are decided here, never in an adapter. Nothing here parses HTTP or renders a page.
"""
