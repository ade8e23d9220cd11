# lme4's runner of the benchmarks (called by run.py through peers.command("lme4", ...)):
#   Rscript benchmarks/lme4_fit.R benchmarks/data/two_level_1e5.csv
# Fits y ~ x * w + (x | g) by REML with lmer's default control and prints one line,
# "@@RESULT@@ " + JSON, in the layout of peers.py. R reads the CSV copy of the Parquet file
# (the arrow package, R's only Parquet reader, is not installed) with data.table::fread;
# the read and the fit are timed separately. A small fit first (untimed) loads lme4's code paths.
suppressPackageStartupMessages({library(lme4); library(data.table); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
f <- y ~ x * w + (x | g)

t0 <- proc.time()[["elapsed"]]
d <- fread(path, colClasses = c(g = "integer", y = "double", x = "double", w = "double"),
           data.table = FALSE, showProgress = FALSE)
read_s <- proc.time()[["elapsed"]] - t0

invisible(lmer(f, d[d$g < 40, ]))  # warm-up, untimed

t0 <- proc.time()[["elapsed"]]
m <- lmer(f, d)
fit_s <- proc.time()[["elapsed"]] - t0

b <- fixef(m)
vc <- VarCorr(m)$g
tau <- matrix(as.numeric(vc), 2, 2)
conv <- is.null(m@optinfo$conv$lme4$messages)
out <- list(peer = "lme4", fit_s = fit_s, total_s = read_s + fit_s, read_s = read_s,
            notes = "lme4::lmer(formula, d), default control; data.table::fread of the CSV copy",
            beta = unname(as.numeric(b[c("(Intercept)", "x", "w", "x:w")])),
            tau = list(tau[1, ], tau[2, ]), sigma2 = sigma(m)^2,
            remlcrit = unname(REMLcrit(m)), converged = conv,
            maxrss_mb = NA)
cat("@@RESULT@@ ", toJSON(out, auto_unbox = TRUE, digits = NA), "\n", sep = "")
