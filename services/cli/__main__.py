"""``python -m services.cli``: the ``wa-archive`` command."""

from services.cli import main

main()
