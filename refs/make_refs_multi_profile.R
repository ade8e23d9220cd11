# Profile-likelihood intervals of models with several grouping factors (issue 14), two ways:
#   lme4     confint(fit, method = "profile", oldNames = FALSE): lme4's profile, interpolated by
#            splines between the profiled points (accurate to ~1e-4..1e-3 relative), and always
#            on the ML refit (lme4:::devfun2 starts with refitML(fit), also for a REML fit).
#   polished the same intervals located by uniroot on the profiled deviance itself (tol 1e-11):
#            variance components (sd of each random effect, sigma) with the fit's OWN criterion
#            (REML or ML), the others minimised by nlminb (rel.tol 1e-14) from the neighbour's
#            optimum; fixed effects by ML (the other fixed effects and the variance components
#            profiled out: an lmer refit of y - b x_k on the other columns), as lme4 does.
# Cases:
#   machines_nested  score ~ Machine + (1 | Worker) + (1 | Worker:Machine)     nested
#   penicillin       diameter ~ 1 + (1 | plate) + (1 | sample)                 crossed
#   eg_intercepts    math ~ year + (1 | schoolid/childid)                       nested, 7230 rows
#   crossed_slope    y ~ x + (x | school) + (1 | rater)                         crossed, a correlation
#                    (900 simulated rows, multi/data/crossed_slope.csv: tests/inference/test_multi_intervals.py's _crossed())
#   singular_nested  y ~ x + (1 | a/b)                                          var(b:a) estimated 0
#   eg_growth        math ~ year + (year | schoolid) + (year | schoolid:childid)   nested, slopes and
#                    correlations at two levels. Here the polish stops short at three upper bounds
#                    (sigma by REML and ML, sd_year|schoolid:childid by ML): nlminb over six other
#                    parameters does not always reach the minimum, and uniroot then finds the cut
#                    early; tests/inference/test_multi_intervals.py says which and checks them otherwise.
# Run from this folder:  Rscript make_refs_multi_profile.R   (writes multi/inference/profile.json)
suppressPackageStartupMessages({ library(lme4); library(jsonlite); library(data.table) })
invisible(Sys.setlocale("LC_COLLATE", "C"))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
CUT <- qchisq(0.95, 1)

read_case <- function(file, ids) {
  d <- as.data.frame(fread(file.path("multi", "data", file), colClasses = setNames(rep("character", length(ids)), ids)))
  for (v in ids) d[[v]] <- factor(d[[v]])
  d
}

cases <- list(
  machines_nested = list(formula = "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)",
                         file = "machines.csv", ids = c("Worker", "Machine")),
  penicillin = list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)",
                    file = "penicillin.csv", ids = c("plate", "sample")),
  eg_intercepts = list(formula = "math ~ year + (1 | schoolid/childid)",
                       file = "egsingle.csv", ids = c("schoolid", "childid")),
  crossed_slope = list(formula = "y ~ x + (x | school) + (1 | rater)",
                       file = "crossed_slope.csv", ids = c("school", "rater")),
  singular_nested = list(formula = "y ~ x + (1 | a/b)", file = "singular_nested.csv", ids = c("a", "b")),
  eg_growth = list(formula = "math ~ year + (year | schoolid) + (year | schoolid:childid)",
                   file = "egsingle.csv", ids = c("schoolid", "childid"))
)

# D(theta, sigma) with beta profiled out, from the fit's deviance function (lme4:::devfun2's
# pieces): ML  ldL2 + pwrss / s2 + n log(2 pi s2); REML adds ldRX2 and has n - p for n.
crit_fun <- function(fit, reml) {
  # a deviance function of its own (mkLmerDevfun: its own factor, not the fit's)
  fresh <- function() do.call(mkLmerDevfun, lFormula(formula(fit), data = model.frame(fit), REML = reml))
  df <- fresh()
  env <- environment(df)
  n <- nrow(getME(fit, "X")); p <- ncol(getME(fit, "X"))
  ans <- function(theta, sigma, again = TRUE) {
    # a theta lme4 cannot factor (sigma tiny beside the sds: "Downdated VtV is not positive
    # definite"); lme4's factor is left unusable after such an error (every later call fails or
    # gives NaN), so the deviance function is made again
    ok <- tryCatch({ df(theta); TRUE }, error = function(e) FALSE)
    if (!ok) {
      df <<- fresh(); env <<- environment(df)
      return(Inf)
    }
    s2 <- sigma^2
    pw <- env$resp$wrss() + env$pp$sqrL(1)
    d <- env$pp$ldL2() + pw / s2 + (if (reml) n - p else n) * log(2 * pi * s2)
    if (reml) d <- d + env$pp$ldRX2()
    if (is.nan(d) && again) {  # lme4's factor left unusable by an earlier theta: made again
      df <<- fresh(); env <<- environment(df)
      return(ans(theta, sigma, FALSE))
    }
    if (is.nan(d)) Inf else d
  }
  ans
}

# phi: per random-effect term, in theta's order (the lower triangle column by column), the sd of
# each diagonal element and the correlation of each off-diagonal one; then sigma. theta of a term:
# the lower Cholesky factor of its covariance (sd_i sd_j cor_ij) over sigma.
term_sizes <- function(fit) sapply(getME(fit, "cnms"), length)
phi_of <- function(fit) {
  th <- getME(fit, "theta"); sg <- sigma(fit); out <- c(); at <- 0
  for (q in term_sizes(fit)) {
    L <- matrix(0, q, q); n <- q * (q + 1) / 2
    L[lower.tri(L, diag = TRUE)] <- th[at + seq_len(n)]; at <- at + n
    Tm <- sg^2 * L %*% t(L); sd <- sqrt(diag(Tm))
    for (j in seq_len(q)) for (i in j:q) out <- c(out, if (i == j) sd[i] else Tm[i, j] / (sd[i] * sd[j]))
  }
  c(out, sg)
}
theta_of <- function(fit, phi) {
  sg <- phi[length(phi)]; out <- c(); at <- 0
  for (q in term_sizes(fit)) {
    n <- q * (q + 1) / 2; v <- phi[at + seq_len(n)]; at <- at + n
    P <- matrix(0, q, q); P[lower.tri(P, diag = TRUE)] <- v
    sd <- diag(P); C <- P; diag(C) <- 1; C[upper.tri(C)] <- t(C)[upper.tri(C)]
    Tm <- outer(sd, sd) * C
    L <- if (q == 1) matrix(sd) else tryCatch(t(chol(Tm)), error = function(e) NULL)
    if (is.null(L)) return(NULL)
    out <- c(out, L[lower.tri(L, diag = TRUE)] / sg)
  }
  out
}
phi_names <- function(fit) {
  cn <- getME(fit, "cnms"); out <- c()
  for (g in seq_along(cn)) {
    v <- cn[[g]]; grp <- names(cn)[g]; q <- length(v)
    for (j in seq_len(q)) for (i in j:q)
      out <- c(out, if (i == j) paste0("sd_", v[i], "|", grp) else paste0("cor_", v[i], ".", v[j], "|", grp))
  }
  c(out, "sigma")
}
phi_kinds <- function(fit) {
  out <- c()
  for (q in term_sizes(fit)) for (j in seq_len(q)) for (i in j:q) out <- c(out, if (i == j) "sd" else "cor")
  c(out, "sigma")
}

vc_intervals <- function(fit, reml) {
  D <- crit_fun(fit, reml)
  phi_hat <- phi_of(fit); sg <- phi_hat[length(phi_hat)]
  kinds <- phi_kinds(fit)
  lower <- ifelse(kinds == "cor", -1, 0); lower[length(lower)] <- 1e-8
  upper <- ifelse(kinds == "cor", 1, Inf)
  Dphi <- function(phi) {
    if (any(!is.finite(phi)) || any(phi < lower) || any(phi > upper)) return(Inf)
    th <- theta_of(fit, phi)
    if (is.null(th)) Inf else D(th, phi[length(phi)])
  }
  # the optimum in phi (the fit's theta is polished by bobyqa; one more nlminb pass to be sure)
  o <- nlminb(phi_hat, Dphi, lower = lower, upper = upper, control = list(rel.tol = 1e-15, x.tol = 1e-12, eval.max = 1e4, iter.max = 1e4))
  if (o$objective < Dphi(phi_hat)) phi_hat <- o$par
  dmin <- Dphi(phi_hat)
  out <- list()
  for (k in seq_along(phi_hat)) {
    start <- phi_hat[-k]
    prof <- function(v) {
      f <- function(x) { ph <- numeric(length(phi_hat)); ph[-k] <- x; ph[k] <- v; Dphi(ph) }
      # twice: nlminb at this tolerance can stop early ("singular convergence") from a far start
      for (rep in 1:2) {
        o <- nlminb(start, f, lower = lower[-k], upper = upper[-k],
                    control = list(rel.tol = 1e-14, x.tol = 1e-12, eval.max = 1e4, iter.max = 1e4))
        start <<- o$par
      }
      o$objective - dmin - CUT
    }
    est <- phi_hat[k]
    side <- function(dir) {
      start <<- phi_hat[-k]
      a <- est; fa <- -CUT; step <- if (kinds[k] == "cor") 0.1 else max(0.25 * est, 1e-3)
      limit <- if (dir < 0) lower[k] else upper[k]
      if (kinds[k] == "sigma" && dir < 0) limit <- 0
      repeat {
        b <- if (dir < 0) max(a - step, limit) else min(a + step, limit)
        fb <- prof(b)
        if (fb > 0) {
          r <- if (dir < 0) uniroot(prof, c(b, a), f.lower = fb, f.upper = fa, tol = 1e-11)
               else uniroot(prof, c(a, b), f.lower = fa, f.upper = fb, tol = 1e-11)
          return(r$root)
        }
        if (b == limit) return(limit)  # the profile stays below the cut up to the parameter's limit
        a <- b; fa <- fb; step <- step * 1.6
      }
    }
    lo <- side(-1); hi <- side(+1)
    out[[k]] <- c(phi_hat[k], lo, hi)
  }
  list(names = I(phi_names(fit)), rows = lapply(out, function(r) I(unname(r))), dmin = dmin, phi_hat = I(unname(phi_hat)))
}

fixed_intervals <- function(fit_ml, data, formula) {
  X <- getME(fit_ml, "X"); y <- getME(fit_ml, "y")
  bars <- paste(sapply(findbars(as.formula(formula)), function(b) paste0("(", deparse(b), ")")), collapse = " + ")
  dmin <- deviance(fit_ml)
  out <- list()
  for (k in seq_len(ncol(X))) {
    prof <- function(v) {
      d <- data; d$.yk <- y - v * X[, k]; d$.Xk <- X[, -k, drop = FALSE]
      f <- if (ncol(X) > 1) paste(".yk ~ 0 + .Xk +", bars) else paste(".yk ~ 0 +", bars)
      m <- lmer(as.formula(f), data = d, REML = FALSE, control = ctrl)
      deviance(m) - dmin - CUT
    }
    b <- fixef(fit_ml)[k]; se <- sqrt(vcov(fit_ml)[k, k])
    side <- function(dir) {
      a <- b; step <- 1.5 * se
      repeat { c <- a + dir * step; if (prof(c) > 0) return(uniroot(prof, sort(c(a, c)), tol = 1e-11)$root); a <- c; step <- step * 1.6 }
    }
    out[[k]] <- c(b, side(-1), side(+1))
  }
  list(names = I(colnames(X)), rows = lapply(out, function(r) I(unname(r))), dmin = dmin)
}

res <- list()
for (cn in names(cases)) {
  cs <- cases[[cn]]
  data <- read_case(cs$file, cs$ids)
  for (meth in c("REML", "ML")) {
    cat(cn, meth, "\n")
    fit <- lmer(as.formula(cs$formula), data = data, REML = meth == "REML", control = ctrl)
    fit_ml <- if (meth == "ML") fit else lmer(as.formula(cs$formula), data = data, REML = FALSE, control = ctrl)
    t0 <- proc.time()[["elapsed"]]
    ci <- suppressWarnings(confint(fit, method = "profile", oldNames = FALSE, level = 0.95))
    el <- proc.time()[["elapsed"]] - t0
    vc <- vc_intervals(fit, meth == "REML")
    fx <- fixed_intervals(fit_ml, data, cs$formula)
    res[[cn]][[meth]] <- list(
      criterion = if (meth == "REML") REMLcrit(fit) else deviance(fit),
      lme4_confint = list(names = rownames(ci), low = I(unname(ci[, 1])), high = I(unname(ci[, 2])), elapsed_sec = el),
      polished_variance = vc, polished_fixed = fx)
  }
  res[[cn]]$formula <- cs$formula
  res[[cn]]$data_file <- paste0("data/", cs$file)
  res[[cn]]$id_columns <- I(cs$ids)
}
res$notes <- I(c(
  "lme4_confint: confint(fit, method='profile', oldNames=FALSE, level=0.95) (lme4 profiles the ML refit also for REML fits; spline-interpolated).",
  "polished_variance.rows: per parameter (estimate, lower, upper), the sd of each random effect then sigma, by the fit's own criterion (REML or ML), located by uniroot (tol 1e-11) on the profiled criterion minimised by nlminb.",
  "polished_fixed.rows: (ML estimate, lower, upper) by ML for every fit (REML fits: on the ML refit, as lme4 does): uniroot on the deviance of lmer refits of y - b x_k on the other columns.",
  paste("control:", "lmerControl(optimizer='bobyqa', optCtrl=list(rhoend=1e-12, maxfun=1e5))"),
  paste("software: R", R.version.string, "lme4", as.character(packageVersion("lme4")))))
dir.create("multi/inference", recursive = TRUE, showWarnings = FALSE)
write_json(res, "multi/inference/profile.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote multi/inference/profile.json\n")
