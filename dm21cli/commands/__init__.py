"""Subcommands of ``dm21``, each imported only when invoked (see ``dm21cli.cli``)."""
