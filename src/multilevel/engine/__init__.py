"""Stage 5, engine: the profiled objective, the optimizer with its checks, the random-effects covariance and conditional modes."""
