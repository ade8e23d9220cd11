"""Stage 8, diagnostics: HLM's statistics (reliabilities, chi-square tests), EB residuals and files, effect sizes, plots."""
