"""``python -m hypersweep`` = the ``hypersweep`` command."""

from hypersweep.cli import main

if __name__ == "__main__":  # importing this module (a spawned multiprocessing child does) runs nothing
    main()
