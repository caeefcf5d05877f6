"""``python -m barkkit``: the same as the ``barkkit`` command."""

from barkkit.cli import main

main()
