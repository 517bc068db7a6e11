"""`python -m dreamcam ...`: the same as the `dreamcam` command."""

from dreamcam.cli.main import console_main

console_main()
