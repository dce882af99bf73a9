"""``python -m hypersweep`` = the ``hypersweep`` command."""

from hypersweep.cli import main

if __name__ == "__main__":  # a spawned child process (the MLflow writer) imports this module too
    main()
