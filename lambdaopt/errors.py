"""Errors a user can fix. Each carries a one-line message naming the problem and the fix.

The entry point prints these as a single line (no traceback) and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class LambdaoptError(Exception):
    """Base class: a problem with the user's config, data or environment."""


class ConfigError(LambdaoptError):
    """A config value is missing, of the wrong type, or out of range."""


class DataError(LambdaoptError):
    """A dataset is missing, malformed, or cannot be split as asked."""


class TrainingDiverged(LambdaoptError):
    """Loss, gradients or λ became NaN/Inf."""


class ReportError(LambdaoptError):
    """A report cannot be built: no such experiment, no runs, or a metric the runs do not have."""
