# lme4's runner for benchmarks/nested.py (issue 14): one timed REML fit of a model with several
# grouping factors, in a fresh R process.
#   Rscript benchmarks/lme4_multi.R <csv> "<formula>" <id columns, comma-separated> <warm-up csv>
# Reads the CSV with data.table::fread (ids as text), fits the warm-up file untimed (loads lme4's
# code paths), then times the read and lmer's fit with its default control, and prints one line
# "@@RESULT@@ " + JSON: fit_s, read_s, total_s, the REML criterion, the fixed effects, theta, the
# optimizer's evaluations, and the process's peak memory (from /proc/self/status, VmHWM).
suppressPackageStartupMessages({library(lme4); library(data.table); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
f <- as.formula(args[2])
ids <- strsplit(args[3], ",")[[1]]
warm <- args[4]
read <- function(p) {
  cls <- setNames(rep("character", length(ids)), ids)
  fread(p, colClasses = cls, data.table = FALSE, showProgress = FALSE)
}
invisible(lmer(f, read(warm)))
t0 <- proc.time()[["elapsed"]]
d <- read(path)
read_s <- proc.time()[["elapsed"]] - t0
t0 <- proc.time()[["elapsed"]]
m <- lmer(f, d)
fit_s <- proc.time()[["elapsed"]] - t0
hwm <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
rss <- as.numeric(gsub("[^0-9]", "", hwm)) / 1024
out <- list(peer = "lme4", fit_s = fit_s, read_s = read_s, total_s = read_s + fit_s,
            crit = REMLcrit(m), beta = as.list(fixef(m)), theta = unname(getME(m, "theta")),
            evaluations = m@optinfo$feval, converged = is.null(m@optinfo$conv$lme4$messages),
            maxrss_mb = rss, notes = "lme4::lmer(formula, d), default control; data.table::fread of the CSV")
cat("@@RESULT@@ ", toJSON(out, auto_unbox = TRUE, digits = NA), "\n", sep = "")
