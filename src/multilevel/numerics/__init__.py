"""Stage 1, numerics: the compiled loops and dense per-unit algebra (arrays in, arrays out; no DataFrame, no model)."""
