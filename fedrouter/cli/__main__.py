"""`python -m fedrouter.cli`: the same as the `fedrouter` command."""

from fedrouter.cli import main

main()
