"""``python -m trainrun.cli``: the ``trainrun`` command without the console script (tests, CI)."""

from trainrun.cli.main import run

run()
