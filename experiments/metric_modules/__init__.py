"""Local ``evaluate`` metric scripts, loaded by path so no Hub access is needed.

Each ``<name>.py`` here is an ``evaluate.Metric`` script for
:func:`experiments.metrics.load_metric`. They are loaded with
``evaluate.load(<file path>)``, not imported as part of the package. Keep one
``import`` per line in them: evaluate scans the script's import lines to check
dependencies and misreads ``import a, b``.
"""
