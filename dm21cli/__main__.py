"""``python -m dm21cli`` and the ``dm21`` console script.

SIGINT/SIGTERM handling is installed before anything else is imported, so a
signal that arrives while the program starts ends it with status 130 like
any other interruption (`dm21cli.core.interrupts`); and the process ends
through `interrupts.exit_process`, so that one arriving while it exits does
too.
"""

import sys


def main() -> None:
    """Entry point of the ``dm21`` command; never returns."""
    from dm21cli.core import interrupts

    interrupts.install()
    try:
        from dm21cli.cli.main import main as cli_main
    except Exception:  # noqa: BLE001
        # a signal while the command line loads; its KeyboardInterrupt may come out of an
        # extension module's import as another error ("ImportError: initialization failed")
        if interrupts.received() is None:
            raise
        sys.stderr.write(f"dm21: error: {interrupts.message()}\n")
        interrupts.exit_process(interrupts.EXIT_STATUS)
    except KeyboardInterrupt as exc:  # a signal while the command line loads
        sys.stderr.write(f"dm21: error: {exc or 'interrupted'}\n")
        interrupts.exit_process(interrupts.EXIT_STATUS)
    try:
        cli_main()
    except SystemExit as exc:  # every command ends here: its status, never the finalization's
        interrupts.exit_process(_status(exc.code), final=True)
    except KeyboardInterrupt as exc:  # a signal between the command's last check and its exit
        sys.stderr.write(f"dm21: error: {exc or interrupts.message()}\n")
        interrupts.exit_process(interrupts.EXIT_STATUS, final=True)


def _status(code) -> int:
    """The exit status of SystemExit(code), as Python's own exit makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


if __name__ == "__main__":
    main()
