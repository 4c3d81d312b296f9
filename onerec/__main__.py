"""`python -m onerec` runs the CLI."""

from onerec.cli import main

main()
