"""Entry point in a checkout: `python run.py [overrides]` or `python run.py -m [sweep overrides]` (the same as
the `lambdaopt` command and `python -m lambdaopt`: lambdaopt/cli.py)."""
from lambdaopt.cli import main

if __name__ == "__main__":
    main()
