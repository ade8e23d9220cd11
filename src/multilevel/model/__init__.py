"""Stage 2, model: what the user wrote (formulas, HLM's level equations, transforms) as a specification without data."""
