"""``python -m singledir ...``: the same entry point as the ``singledir`` script."""

from singledir.cli.app import main

if __name__ == "__main__":
    main()
