# lme4's runner of the benchmarks (called by run.py and users.py through peers.command("lme4", ...)):
#   Rscript benchmarks/lme4_fit.R benchmarks/data/two_level_1e5.csv
#   Rscript benchmarks/lme4_fit.R benchmarks/data/users_1e5_text_shuffled.csv \
#       "y ~ x1*w1 + x2 + w2 + (1 + x1 | g)" character x1
# Fits the model by REML with lmer's default control and prints one line, "@@RESULT@@ " + JSON,
# in the layout of peers.py. Without more arguments the model is y ~ x * w + (x | g) on the old
# files; otherwise the formula, the class of the id column g ("integer" or "character") and the
# random slope's name follow the path, and only the formula's columns are read. R reads the CSV
# copy of the Parquet file (the arrow package, R's only Parquet reader, is not installed) with
# data.table::fread; the read and the fit are timed separately. A small fit first (untimed) loads
# lme4's code paths.
suppressPackageStartupMessages({library(lme4); library(data.table); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
old <- length(args) < 2
f <- if (old) y ~ x * w + (x | g) else as.formula(args[2])
gclass <- if (old) "integer" else args[3]
slope <- if (old) "x" else args[4]
cols <- all.vars(f)
classes <- setNames(rep("double", length(cols)), cols)
classes[["g"]] <- gclass
if ("f" %in% cols) classes[["f"]] <- "character"

t0 <- proc.time()[["elapsed"]]
d <- fread(path, select = classes, data.table = FALSE, showProgress = FALSE)
read_s <- proc.time()[["elapsed"]] - t0

first <- unique(d$g)[1:40]
invisible(lmer(f, d[d$g %in% first, ]))  # warm-up, untimed

t0 <- proc.time()[["elapsed"]]
m <- lmer(f, d)
fit_s <- proc.time()[["elapsed"]] - t0

b <- fixef(m)
vc <- VarCorr(m)$g
tau <- matrix(as.numeric(vc), 2, 2)
conv <- is.null(m@optinfo$conv$lme4$messages)
out <- list(peer = "lme4", fit_s = fit_s, total_s = read_s + fit_s, read_s = read_s,
            notes = "lme4::lmer(formula, d), default control; data.table::fread of the CSV copy",
            coefs = as.list(b),
            tau = list(tau[1, ], tau[2, ]), sigma2 = sigma(m)^2,
            remlcrit = unname(REMLcrit(m)), converged = conv,
            maxrss_mb = NA)
if (old) out$beta <- unname(as.numeric(b[c("(Intercept)", "x", "w", "x:w")]))
cat("@@RESULT@@ ", toJSON(out, auto_unbox = TRUE, digits = NA), "\n", sep = "")
