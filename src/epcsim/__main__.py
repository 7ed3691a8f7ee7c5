"""``python -m epcsim``: the command line."""

from .cli import main

main()
