"""One module per `python -m onegen` command: `add_arguments(parser)` and `main(args) -> int`."""
