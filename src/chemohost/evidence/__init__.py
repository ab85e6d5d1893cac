"""Evidence: published facts as executable checks (``chemohost validate``).

See :mod:`chemohost.evidence.framework`; the checks themselves live in
``chemohost.evidence.checks`` (registered with :func:`check`)."""

from .framework import Check, CheckResult, check, format_table, load_checks, run_checks

__all__ = ["Check", "CheckResult", "check", "format_table", "load_checks", "run_checks"]
