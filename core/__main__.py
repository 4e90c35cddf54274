"""``python -m prunekit``: the ``core`` command, for environments whose scripts are not on PATH."""

from prunekit.cli import main

main()
