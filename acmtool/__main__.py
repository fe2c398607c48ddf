"""python -m acmtool: the same as the acmtool command."""
from acmtool.cli.main import main

main()
