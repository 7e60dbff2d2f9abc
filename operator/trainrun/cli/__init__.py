"""The ``trainrun`` command line (typer + rich), a thin layer over ``trainrun.Client``.

Entry point: ``trainrun.cli.main:run``; the typer app is ``trainrun.cli.main.app``.
"""
