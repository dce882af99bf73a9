"""``python -m hypersweep`` = the ``hypersweep`` command."""

from hypersweep.cli import main

main()
