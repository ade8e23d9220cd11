"""Stage 7, inference: df, standard errors (model-based, CR0-CR2, Kenward-Roger), tests, intervals and comparisons."""
