"""`python -m onerec` runs the CLI (`onerec.app.cli`): the one core module allowed to import it."""

from onerec.app.cli import main

main()
