"""What the benchmarks record about the machine they ran on (the run's own record)."""

from partlearn.runner import cpu_model  # noqa: F401  (the benchmarks' import)
