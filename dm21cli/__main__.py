"""``python -m dm21cli`` and the ``dm21`` console script.

SIGINT/SIGTERM handling is installed before anything else is imported, so a
signal that arrives while the program starts ends it with status 130 like
any other interruption (`dm21cli.core.interrupts`).
"""

import sys


def main() -> None:
    """Entry point of the ``dm21`` command; never returns."""
    from dm21cli.core import interrupts

    interrupts.install()
    try:
        from dm21cli.cli.main import main as cli_main
    except Exception as exc:  # noqa: BLE001
        # a signal while the command line loads; its KeyboardInterrupt may come out of an
        # extension module's import as another error ("ImportError: initialization failed")
        if interrupts.received() is None:
            raise
        sys.stderr.write(f"dm21: error: {interrupts.message()}\n")
        interrupts.exit_process(interrupts.EXIT_STATUS)
    except KeyboardInterrupt as exc:  # a signal while the command line loads
        sys.stderr.write(f"dm21: error: {exc or 'interrupted'}\n")
        interrupts.exit_process(interrupts.EXIT_STATUS)
    cli_main()


if __name__ == "__main__":
    main()
