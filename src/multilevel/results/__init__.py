"""Stage 6, results: the core record of a fit (estimates, their covariance, the optimizer record) that every view reads."""
