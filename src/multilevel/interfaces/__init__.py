"""Stage 10, interfaces: what a user calls and holds (ml.fit, fit_levels, the Fit facade, streaming, pooling)."""
