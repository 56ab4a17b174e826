"""`python -m lambdaopt [overrides]`: the same entry point as the `lambdaopt` command."""
from lambdaopt.cli import main

main()
