"""Stage 9, reports: HLM's report, lme4's summary, the HTML page and the printed equations; they format, never compute."""
