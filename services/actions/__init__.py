"""The one action layer: every operator action, once (``layer``), over everything it needs opened once (``access``).

The admin API (services/retention/api/), the ``wa-archive`` CLI (services/cli/), the console
(services/console/) and the scheduler are adapters over :class:`services.actions.layer.Actions`: roles, reasons and
audit rows are decided here, never in an adapter. Nothing here parses HTTP or renders a page.
"""
