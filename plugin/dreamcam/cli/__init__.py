"""The `dreamcam` command line: the parser, one module per command, printing and exit codes."""
