"""The project's root error class.

Every error a user can see carries what failed and what to do about it. ``transient`` errors
(a broker not reachable yet, a REST call that timed out) may succeed when retried; terminal ones
(a wrong password, an unknown setting, a port held by another program) will not.
"""

from __future__ import annotations

EXIT_FAILED = 1
"""Exit status of a command that failed for good: a terminal error, or a finding (drift, a mismatch)."""
EXIT_TRANSIENT = 75
"""Exit status of a command that failed transiently (``EX_TEMPFAIL``, sysexits.h): the same command may
succeed when run again later (a service still starting, another run of the job holding its lock).
Schedulers retry on it (jobs/airflow_dags/featurectl_dags.py) and give up on ``EXIT_FAILED``."""


class FeatureCtlError(Exception):
    """Base class for every error featurectl raises on purpose.

    ``str(err)`` is the full message shown to the user: the problem, then the fix.
    """

    transient: bool = False

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)


class TransientError(FeatureCtlError):
    """An error that may go away on retry (service still starting, network blip)."""

    transient = True


class ConfigError(FeatureCtlError):
    """A setting is unknown, malformed or missing."""


class SourceChangedError(FeatureCtlError):
    """The source is not the database the stores were built from: its WAL positions went backwards.

    Neither transient nor one record's fault: every later change of an existing entity would be
    skipped as older. The processor stops, and the operator recovers as the message says.
    """


class FencedError(FeatureCtlError):
    """A processor wrote for partitions another copy has claimed since (streams/fencing.py).

    Nothing of the batch was written or committed; its partitions' owner re-reads it from the last commit.
    Transient: the copy backs off and reads on (Kafka then revokes its partitions, or assigns them back).
    """

    transient = True


class RetentionGapError(FeatureCtlError):
    """Changes were deleted from a topic (retention) before the processor read them.

    Terminal: the stores would silently miss them. The message names the partitions and the recovery.
    """
