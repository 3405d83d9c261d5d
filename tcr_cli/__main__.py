"""``python -m tcr_cli``: the same as the ``tcr-pipeline`` console script."""

from tcr_cli.main import main

if __name__ == "__main__":
    main()
