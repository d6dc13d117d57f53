"""One module per subcommand of `samv2`, each with `add_parsers(subparsers)`; a parser sets
`func(args) -> exit code`. Heavy imports happen inside `func`, so `samv2 --help` is quick."""
