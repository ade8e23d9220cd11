# Reference numbers for issue 14: models with more than one grouping factor, nested (three and four
# levels), crossed, and both. One JSON per case in multi/<case>.json and the exact rows each fit used
# in multi/data/<name>.csv[.gz] (every fit is made on the data as read back from that CSV, so a reader
# of the CSV has the rows and values lme4 saw).
#
# Cases (each by REML and ML):
#   eg_growth        math ~ year + (year | schoolid) + (year | schoolid:childid)     egsingle (mlmRev)
#   eg_intercepts    math ~ year + (1 | schoolid/childid)
#   eg_lowinc        math ~ year * lowinc + (year | schoolid) + (year | childid)
#   eg_hlm           math ~ year * (black + hispanic + lowinc) + (year | schoolid) + (year | childid)
#   chem97           score ~ gcsecnt + (1 | lea/school)                               Chem97 (mlmRev)
#   machines_nested  score ~ Machine + (1 | Worker) + (1 | Worker:Machine)            Machines (nlme)
#   machines_corr    score ~ Machine + (Machine | Worker)
#   sim4             y ~ x + w + (1 | a) + (1 + x | a:b) + (1 | a:b:c)                simulated, 4 levels
#   penicillin       diameter ~ 1 + (1 | plate) + (1 | sample)                        Penicillin (lme4)
#   insteval         y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)         InstEval (lme4)
#   singular_nested  y ~ x + (1 | a/b)                                                simulated, var(a:b) = 0
#
# Run from this folder:  Rscript make_refs_multi.R [case ...]   (no argument: every case; ~10 min,
# InstEval dominates). Any step that fails is recorded as {"error": ...}; warnings and messages are
# kept next to the numbers.
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(clubSandwich); library(jsonlite)
  library(data.table); library(mlmRev); library(nlme); library(numDeriv)
})
invisible(Sys.setlocale("LC_COLLATE", "C"))  # factor levels in byte order, whatever the machine
dir.create("multi/data", recursive = TRUE, showWarnings = FALSE)

CTRL_REF_TEXT <- "lmerControl(optimizer='bobyqa', optCtrl=list(rhoend=1e-12, maxfun=1e5))"
CTRL_CHK_TEXT <- paste0("lmerControl(optimizer='nloptwrap', optCtrl=list(algorithm='NLOPT_LN_BOBYQA', ",
                        "xtol_abs=1e-14, ftol_abs=1e-16, xtol_rel=0, ftol_rel=0, maxeval=1e5))")
.ctrl_ref <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
.ctrl_chk <- lmerControl(optimizer = "nloptwrap",
                         optCtrl = list(algorithm = "NLOPT_LN_BOBYQA", xtol_abs = 1e-14,
                                        ftol_abs = 1e-16, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5))
.ctrl_def <- lmerControl()
# No optimization: lmer evaluates its deviance function once at `start` and builds the merMod there
# (lme4's optimizer = NULL), so theta is exactly the polished value we pass.
CTRL_NONE_TEXT <- "lmerControl(optimizer=NULL, calc.derivs=FALSE) with start = the polished theta"
.ctrl_none <- lmerControl(optimizer = NULL, calc.derivs = FALSE)

KR_MAX_ROWS <- 10000   # pbkrtest forms dense n x n matrices: egsingle (7230 rows) needs ~1 GB, 10 s
RANEF_MAX_ROWS <- 6000 # as.data.frame(ranef) rows kept in full below this; above, see the case's note

software <- list(R = R.version.string)
for (p in c("lme4", "lmerTest", "pbkrtest", "clubSandwich", "nlme", "mlmRev", "Matrix", "minqa",
            "nloptr", "jsonlite", "data.table", "numDeriv"))
  software[[p]] <- as.character(packageVersion(p))

# ---- helpers -----------------------------------------------------------------------------------
# Evaluate expr; keep its value, its warnings, its messages, (if it fails) the error, and the time.
run <- function(expr) {
  warns <- character(0); msgs <- character(0)
  t0 <- proc.time()
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(list(msg = conditionMessage(e)), class = "run_err")),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m))); invokeRestart("muffleMessage") })
  el <- (proc.time() - t0)[["elapsed"]]
  out <- list(warnings = I(unique(warns)), messages = I(unique(msgs)), elapsed_sec = el)
  if (inherits(val, "run_err")) return(c(list(error = val$msg), out))
  c(list(value = val), out)
}
mat <- function(m) unname(lapply(seq_len(nrow(m)), function(i) I(unname(as.numeric(m[i, ])))))  # rows; I(): 1x1 stays [[x]]
cols <- function(df) {  # data.frame -> list of columns (factors as text)
  df <- as.data.frame(df, stringsAsFactors = FALSE)
  out <- lapply(df, function(v) if (is.factor(v)) as.character(v) else v)
  lapply(out, I)
}

# Write the data, read it back, make the id columns factors (levels in C order). The fits use what
# was read back, so the CSV holds exactly the values lme4 saw.
export_data <- function(df, name, ids, gz = FALSE) {
  file <- file.path("multi", "data", paste0(name, if (gz) ".csv.gz" else ".csv"))
  fwrite(df, file)
  back <- as.data.frame(fread(file, colClasses = setNames(rep("character", length(ids)), ids)))
  for (v in ids) back[[v]] <- factor(back[[v]])
  list(data = back, file = sub("^multi/", "", file), name = name)
}

# Is every level of `inner` seen with exactly one level of `outer`?
nested_in <- function(inner, outer) {
  k <- tapply(as.character(outer), as.character(inner), function(v) length(unique(v)))
  list(nested = all(k == 1), max_outer_levels_per_inner = max(k))
}
nesting_checks <- function(data, fit, ids) {
  fl <- getME(fit, "flist")
  facs <- list()
  for (v in ids) facs[[v]] <- data[[v]]
  for (nm in names(fl)) if (is.null(facs[[nm]])) facs[[nm]] <- fl[[nm]]
  levels_n <- lapply(facs, function(f) length(unique(as.character(f))))
  pairs <- list()
  for (a in names(facs)) for (b in names(facs)) if (a != b) {
    r <- nested_in(facs[[a]], facs[[b]])
    pairs[[length(pairs) + 1]] <- list(inner = a, outer = b, nested = r$nested,
                                       max_outer_levels_per_inner = r$max_outer_levels_per_inner)
  }
  list(source = paste("computed in R from the rows: inner is nested in outer when every level of inner",
                      "occurs with exactly one level of outer; factors = the data's id columns and",
                      "lme4's grouping factors (getME(fit, 'flist'))"),
       n_levels = levels_n, pairs = pairs)
}

`%||%` <- function(a, b) if (is.null(a)) b else a
crit_of <- function(m, reml) if (reml) REMLcrit(m) else deviance(m)

# One lmer call, built with the formula, the data and the control written in (so that update(), used
# by lmerTest and pbkrtest, refits the same model), evaluated in the global environment.
lmer_call <- function(form, reml, ctrl_name, start = NULL) {
  cl <- bquote(lme4::lmer(.(form), data = .mdat, REML = .(reml), control = .(as.name(ctrl_name))))
  if (!is.null(start)) { assign(".mstart", start, envir = globalenv()); cl$start <- quote(.mstart) }
  run(eval(cl, globalenv()))
}
opt_info <- function(r, name, reml) {
  if (!is.null(r$error)) return(list(control = name, error = r$error, warnings = r$warnings,
                                     messages = r$messages, elapsed_sec = r$elapsed_sec))
  m <- r$value
  th <- getME(m, "theta")
  list(control = name, optimizer = m@optinfo$optimizer, feval = m@optinfo$feval,
       conv_code = m@optinfo$conv$opt, optimizer_message = as.character(m@optinfo$message),
       lme4_messages = I(as.character(unlist(m@optinfo$conv$lme4$messages))),
       warnings = r$warnings, messages = r$messages,
       criterion = crit_of(m, reml), theta = I(unname(th)), fixef = I(unname(fixef(m))),
       sigma = sigma(m), elapsed_sec = r$elapsed_sec)
}

# ---- polishing ---------------------------------------------------------------------------------
# lme4's optimizers (bobyqa, nloptwrap's BOBYQA) are derivative-free: on the flat criteria of these
# models they stop where the criterion no longer changes in its ~14th significant digit, with
# gradients in theta up to ~1e-3, and the fixed effects and vcov there differ from the optimum by up
# to ~2e-6 relative. Newton steps on lme4's own deviance function (lmer(..., devFunOnly = TRUE)),
# with numDeriv's Richardson-extrapolated gradient and Hessian (genD), take theta to the optimum.
# Only free parameters move: a theta exactly on its zero bound stays there (a singular fit stays
# exactly singular; for a scalar term the criterion is even in theta, so its derivative at 0 is 0).
# lme4's deviance function carries rounding noise of ~1e-14 relative (~1e-10 on egsingle's 16337):
# the criterion cannot tell the optimum from lme4's stopping point, the gradient can. numDeriv's
# default first step (1e-4 relative) turns that noise into Hessian errors of order 1, so the steps
# are h = 0.01 |theta| + 0.01 (then halved r - 1 times by Richardson): the gradient's noise floor is
# then ~1e-8 (1e-10 / 1e-2) rather than ~1e-6.
POLISH_MAXIT <- 6; POLISH_GTOL <- 1e-7
POLISH_ARGS <- list(d = 0.01, eps = 0.01, zero.tol = Inf, r = 4, v = 2)
polish_theta <- function(devfun, th0, lower, maxit = POLISH_MAXIT) {
  t0 <- proc.time()
  free <- !(th0 == 0 & lower == 0)
  p <- sum(free)
  n_eval <- 0
  f_full <- function(t) { n_eval <<- n_eval + 1; devfun(t) }
  derivs <- function(th) {  # gradient and Hessian of the criterion in the free thetas
    D <- numDeriv::genD(function(x) { t <- th; t[free] <- x; f_full(t) }, th[free],
                        method.args = POLISH_ARGS)$D
    H <- matrix(0, p, p); u <- p
    for (i in seq_len(p)) for (j in seq_len(i)) { u <- u + 1; H[i, j] <- D[u] }
    H <- H + t(H); diag(H) <- diag(H) / 2
    list(g = D[seq_len(p)], H = H)
  }
  # Rounding spread of the criterion: devfun at theta * (1 + k 1e-11), k = -5..5 (the criterion
  # itself moves by < 1e-14 there); a step may raise the criterion by at most twice this.
  spread <- function(th) { v <- sapply(-5:5, function(k) f_full(th * (1 + k * 1e-11))); max(v) - min(v) }
  th <- th0; f <- f_full(th); f0 <- f
  noise <- spread(th0)
  pts <- list(); stop_reason <- sprintf("%d iterations", maxit); it <- 0
  repeat {
    dv <- derivs(th)
    gmax <- max(abs(dv$g))
    pts[[length(pts) + 1]] <- list(iteration = it, criterion = f, gradient_maxabs = gmax,
                                   theta = I(th), gradient = I(dv$g))
    if (gmax < POLISH_GTOL) { stop_reason <- sprintf("max|gradient| < %g", POLISH_GTOL); break }
    if (it >= 1 && gmax > 0.5 * pts[[length(pts) - 1]]$gradient_maxabs) {
      stop_reason <- "gradient stopped improving (rounding noise of the criterion)"; break }
    if (it >= maxit) break
    step <- tryCatch(-solve(dv$H, dv$g), error = function(e) NULL)
    if (is.null(step)) { stop_reason <- "Hessian singular"; break }
    lam <- 1; ok <- FALSE
    for (k in 1:30) {
      tn <- th; tn[free] <- th[free] + lam * step
      if (all(tn[free] >= lower[free])) {
        fn <- f_full(tn)
        if (fn <= f + 2 * noise) { ok <- TRUE; break }
      }
      lam <- lam / 2
    }
    if (!ok) { stop_reason <- "no step (halved 30 times) keeps the criterion"; break }
    pts[[length(pts)]]$step_halvings <- k - 1
    th <- tn; f <- fn; it <- it + 1
  }
  best <- pts[[which.min(sapply(pts, function(q) q$gradient_maxabs))]]
  list(theta = as.numeric(best$theta), criterion = best$criterion,
       info = list(gradient_maxabs_before = pts[[1]]$gradient_maxabs,
                   gradient_maxabs_after = best$gradient_maxabs,
                   gradient_before = I(unname(pts[[1]]$gradient)), gradient_after = I(unname(best$gradient)),
                   criterion_before = f0, criterion_after = best$criterion,
                   criterion_change = best$criterion - f0,
                   criterion_rounding_spread = noise,
                   iterations = best$iteration, newton_steps_tried = it, stop_reason = stop_reason,
                   theta_before = I(unname(th0)), theta_after = I(unname(as.numeric(best$theta))),
                   free = I(unname(free)),
                   history = lapply(pts, function(q) q[c("iteration", "criterion", "gradient_maxabs",
                                                         intersect("step_halvings", names(q)))]),
                   devfun_evaluations = n_eval, elapsed_sec = (proc.time() - t0)[["elapsed"]],
                   method = paste(sprintf("Newton steps on lmer(..., devFunOnly = TRUE) in the free thetas (at most %d);", maxit),
                                  "gradient and Hessian by numDeriv::genD (Richardson: d = 0.01, eps = 0.01,",
                                  "zero.tol = Inf, r = 4, v = 2, i.e. first step 0.01 |theta| + 0.01);",
                                  "a step is halved until the criterion is at most 2 criterion_rounding_spread",
                                  sprintf("above the current one; stop at max|gradient| < %g, or when it no longer", POLISH_GTOL),
                                  "halves; the point kept is the one with the smallest max|gradient|;",
                                  "thetas exactly on a zero bound stay there")))
}

# ---- one fit, one method -----------------------------------------------------------------------
fit_method <- function(cs, reml) {
  meth <- if (reml) "REML" else "ML"
  form <- as.formula(cs$formula)
  cat(sprintf("  %s %s ...\n", cs$case, meth))
  # lme4's default control, timed (the benchmark quotes this one), then the two tight controls.
  r_def <- lmer_call(form, reml, ".ctrl_def")
  r_ref <- lmer_call(form, reml, ".ctrl_ref")
  r_chk <- lmer_call(form, reml, ".ctrl_chk")
  if (!is.null(r_ref$error)) stop(sprintf("%s %s: %s", cs$case, meth, r_ref$error))
  cands <- list(bobyqa = r_ref)
  if (is.null(r_chk$error)) cands$nloptwrap <- r_chk
  crits <- sapply(cands, function(r) crit_of(r$value, reml))
  lower <- names(which.min(crits))
  # bobyqa restarted at the lower of the two optima: both optimizers then agree at the point we report.
  r_pol <- lmer_call(form, reml, ".ctrl_ref", start = list(theta = getME(cands[[lower]]$value, "theta")))
  if (is.null(r_pol$error)) cands$bobyqa_restarted <- r_pol
  crits <- sapply(cands, function(r) crit_of(r$value, reml))
  # Criteria within 1e-12 relative of the lowest are ties (float noise: the optimizers differ by a few
  # ulps there); among ties prefer the fit with most theta exactly on a zero bound (a singular fit
  # reported as exactly singular), then the restarted bobyqa, bobyqa, nloptwrap.
  ties <- names(crits)[crits <= min(crits) + 1e-12 * abs(min(crits))]
  at_zero <- sapply(ties, function(n) { m <- cands[[n]]$value
    sum(getME(m, "theta") == 0 & getME(m, "lower") == 0) })
  pref <- c("bobyqa_restarted", "bobyqa", "nloptwrap")
  ties <- ties[order(-at_zero, match(ties, pref))]
  chosen <- ties[[1]]
  fit <- cands[[chosen]]$value
  cat(sprintf("    criteria: %s; chosen %s\n", paste(sprintf("%s=%.10f", names(crits), crits),
                                                     collapse = " "), chosen))
  # Polish the chosen fit to the optimum, then rebuild the merMod at the polished theta (lmer with
  # optimizer = NULL evaluates the deviance function once there): every number below is at that theta.
  devfun <- eval(bquote(lme4::lmer(.(form), data = .mdat, REML = .(reml), control = .ctrl_ref,
                                   devFunOnly = TRUE)), globalenv())
  th_chosen <- getME(fit, "theta")
  if (!isTRUE(all.equal(devfun(th_chosen), crit_of(fit, reml), tolerance = 1e-13)))
    stop(sprintf("%s %s: devfun at the chosen theta is not the chosen criterion", cs$case, meth))
  pol <- polish_theta(devfun, unname(th_chosen), unname(getME(fit, "lower")), maxit = cs$polish_maxit %||% POLISH_MAXIT)
  polish <- pol$info
  if (any(pol$theta != th_chosen)) {
    r_fin <- lmer_call(form, reml, ".ctrl_none", start = list(theta = pol$theta))
    if (!is.null(r_fin$error)) stop(sprintf("%s %s: rebuild at the polished theta: %s", cs$case, meth, r_fin$error))
    fit <- r_fin$value
    if (!identical(unname(getME(fit, "theta")), pol$theta) || crit_of(fit, reml) != pol$criterion)
      stop(sprintf("%s %s: the rebuilt fit is not at the polished theta", cs$case, meth))
    polish$rebuilt <- list(control = CTRL_NONE_TEXT, warnings = r_fin$warnings, messages = r_fin$messages,
                           theta_identical = TRUE, criterion_identical = TRUE)
  } else {
    polish$rebuilt <- "no: theta unchanged, the chosen fit is used as it is"
  }
  cat(sprintf("    polish: max|grad| %.2e -> %.2e, criterion %+.3e (spread %.1e), %d iterations, %.0f s (%s)\n",
              polish$gradient_maxabs_before, polish$gradient_maxabs_after, polish$criterion_change,
              polish$criterion_rounding_spread, polish$iterations, polish$elapsed_sec, polish$stop_reason))

  fe <- fixef(fit); V <- as.matrix(vcov(fit)); th <- getME(fit, "theta")
  vc <- as.data.frame(VarCorr(fit))
  ll <- logLik(fit)
  blk <- list(
    method = meth,
    formula = cs$formula,
    lme4_formula = paste(deparse(formula(fit)), collapse = " "),
    n_obs = nobs(fit),
    ngrps = as.list(ngrps(fit)),
    fixed_effects = list(names = I(names(fe)), estimate = I(unname(fe)),
                         se = I(unname(sqrt(diag(V)))), t = I(unname(fe / sqrt(diag(V))))),
    vcov = mat(V),
    varcorr = cols(vc),
    sigma = sigma(fit),
    theta = list(names = I(names(th)), values = I(unname(th)),
                 lower = I(unname(getME(fit, "lower"))),
                 n_at_zero_bound = sum(th == 0 & getME(fit, "lower") == 0)),
    criterion = list(name = if (reml) "REMLcrit" else "deviance", value = crit_of(fit, reml)),
    logLik = as.numeric(ll), logLik_df = attr(ll, "df"),
    AIC = AIC(fit), BIC = BIC(fit),
    isSingular = isSingular(fit),
    optimizer = list(chosen = chosen, criteria = as.list(crits),
                     tie_rule = paste("criteria within 1e-12 relative of the lowest are ties; among ties the",
                                      "most theta exactly at a zero bound, then bobyqa_restarted, bobyqa,",
                                      "nloptwrap"),
                     criterion_spread = max(crits) - min(crits),
                     reference = opt_info(r_ref, CTRL_REF_TEXT, reml),
                     check = opt_info(r_chk, CTRL_CHK_TEXT, reml),
                     restarted = opt_info(r_pol, paste(CTRL_REF_TEXT, "started at the lower optimum's theta"), reml),
                     lme4_default = opt_info(r_def, "lmerControl() (lme4's default: nloptwrap)", reml)),
    polish = polish,
    timings_sec = list(lmer_default_control = r_def$elapsed_sec, lmer_bobyqa_tight = r_ref$elapsed_sec,
                       lmer_nloptwrap_tight = r_chk$elapsed_sec)
  )
  blk[[if (reml) "REMLcrit" else "deviance"]] <- crit_of(fit, reml)

  # Satterthwaite (and Kenward-Roger) from lmerTest on this very fit.
  lt <- run(lmerTest::as_lmerModLmerTest(fit))
  blk$timings_sec$lmerTest_conversion <- lt$elapsed_sec
  if (!is.null(lt$error)) {
    blk$satterthwaite <- list(error = lt$error, warnings = lt$warnings)
  } else {
    s <- run(summary(lt$value, ddf = "Satterthwaite")$coefficients)
    blk$satterthwaite <- if (!is.null(s$error)) list(error = s$error) else
      list(df = I(unname(s$value[, "df"])), p = I(unname(s$value[, "Pr(>|t|)"])),
           warnings = c(lt$warnings, s$warnings), source = "lmerTest summary(fit, ddf='Satterthwaite')")
    if (!reml) {
      blk$kenward_roger <- list(skipped = "Kenward-Roger is defined for REML fits only (lmerTest refuses ML fits)")
    } else if (cs$n_rows > KR_MAX_ROWS) {
      blk$kenward_roger <- list(skipped = sprintf(paste(
        "not computed: pbkrtest forms dense n x n matrices (n = %d rows; %.1f GB each);",
        "infeasible here"), cs$n_rows, cs$n_rows^2 * 8 / 1e9))
    } else {
      k <- run(summary(lt$value, ddf = "Kenward-Roger")$coefficients)
      blk$timings_sec$kenward_roger <- k$elapsed_sec
      blk$kenward_roger <- if (!is.null(k$error)) list(error = k$error, warnings = k$warnings) else
        list(df = I(unname(k$value[, "df"])), se = I(unname(k$value[, "Std. Error"])),
             p = I(unname(k$value[, "Pr(>|t|)"])), warnings = k$warnings,
             source = "lmerTest summary(fit, ddf='Kenward-Roger') (pbkrtest)")
    }
  }

  # Cluster-robust SEs at the top level of a nested model.
  if (!is.null(cs$cr2_cluster) && (reml || isTRUE(cs$cr2_ml))) {
    cl <- .mdat[[cs$cr2_cluster]]
    cr <- run({
      v2 <- as.matrix(vcovCR(fit, cluster = cl, type = "CR2"))
      v0 <- as.matrix(vcovCR(fit, cluster = cl, type = "CR0"))
      ct <- coef_test(fit, vcov = "CR2", cluster = cl, test = "Satterthwaite")
      list(v2 = v2, v0 = v0, ct = ct)
    })
    blk$timings_sec$clubSandwich <- cr$elapsed_sec
    blk$cluster_robust <- if (!is.null(cr$error)) list(cluster = cs$cr2_cluster, error = cr$error) else
      list(cluster = cs$cr2_cluster, n_clusters = length(unique(cl)),
           CR2 = list(se = I(unname(sqrt(diag(cr$value$v2)))), vcov = mat(cr$value$v2),
                      satterthwaite_df = I(unname(cr$value$ct$df_Satt))),
           CR0 = list(se = I(unname(sqrt(diag(cr$value$v0)))), vcov = mat(cr$value$v0)),
           warnings = cr$warnings,
           source = paste("clubSandwich vcovCR(fit, cluster, type='CR2'/'CR0');",
                          "coef_test(fit, vcov='CR2', test='Satterthwaite')"))
  }

  # Conditional modes and conditional SDs, lme4's names.
  re <- run(as.data.frame(ranef(fit, condVar = TRUE)))
  blk$timings_sec$ranef_condVar <- re$elapsed_sec
  if (!is.null(re$error)) {
    blk$ranef <- list(error = re$error)
  } else {
    rdf <- re$value
    note <- sprintf("all %d rows of as.data.frame(ranef(fit, condVar = TRUE))", nrow(rdf))
    if (nrow(rdf) > RANEF_MAX_ROWS) {
      # Keep every conditional mode; conditional SDs for the first 50 levels of each factor only.
      keep_sd <- ave(seq_len(nrow(rdf)), rdf$grpvar, rdf$term, FUN = seq_along) <= 50
      rdf$condsd[!keep_sd] <- NA
      note <- sprintf(paste("all %d conditional modes; condsd only for the first 50 levels (lme4's",
                            "order) of each grpvar/term, null elsewhere"), nrow(rdf))
    }
    blk$ranef <- c(cols(rdf[, c("grpvar", "term", "grp", "condval", "condsd")]),
                   list(n_rows = nrow(rdf), note = note))
  }
  blk
}

# ---- one case ----------------------------------------------------------------------------------
run_case <- function(cs) {
  cat(sprintf("%s: %s\n", cs$case, cs$formula))
  assign(".mdat", cs$data, envir = globalenv())
  cs$n_rows <- nrow(cs$data)
  t0 <- proc.time()
  load_start <- trimws(sub(".*load average: ", "", system("uptime", intern = TRUE)))
  out <- list(case = cs$case, description = cs$description, formula = cs$formula,
              data_file = cs$file, data_columns = I(names(cs$data)), id_columns = I(cs$ids),
              n_obs = nrow(cs$data), software = software,
              controls = list(reference = CTRL_REF_TEXT, check = CTRL_CHK_TEXT,
                              rule = paste("both tight controls are run, bobyqa is restarted at the",
                                           "lower optimum, and every number is from the fit with the",
                                           "lowest criterion (optimizer$chosen)")),
              notes = I(cs$notes))
  out$REML <- fit_method(cs, TRUE)
  out$ML <- fit_method(cs, FALSE)
  fit <- suppressMessages(lme4::lmer(as.formula(cs$formula), data = cs$data, REML = TRUE,
                                     control = .ctrl_ref))
  out$nesting <- nesting_checks(cs$data, fit, cs$ids)
  if (!is.null(cs$extra)) out <- c(out, cs$extra(cs))
  out$machine <- list(cores = parallel::detectCores(), load_average_at_start = load_start,
                      load_average_at_end = trimws(sub(".*load average: ", "",
                                                       system("uptime", intern = TRUE))),
                      total_script_sec_for_case = (proc.time() - t0)[["elapsed"]])
  write_json(out, file.path("multi", paste0(cs$case, ".json")), auto_unbox = TRUE, digits = NA,
             pretty = TRUE, na = "null")
  cat(sprintf("  wrote multi/%s.json (%.0f s)\n", cs$case, (proc.time() - t0)[["elapsed"]]))
}

# ---- data --------------------------------------------------------------------------------------
egsingle_data <- function() {
  d <- mlmRev::egsingle
  df <- data.frame(schoolid = as.character(d$schoolid), childid = as.character(d$childid),
                   year = d$year, math = d$math, size = d$size, lowinc = d$lowinc,
                   black = as.integer(as.character(d$black)),
                   hispanic = as.integer(as.character(d$hispanic)), stringsAsFactors = FALSE)
  export_data(df, "egsingle", c("schoolid", "childid"))
}
chem97_data <- function() {
  d <- mlmRev::Chem97
  df <- data.frame(lea = as.character(d$lea), school = as.character(d$school), score = d$score,
                   gcsecnt = d$gcsecnt, stringsAsFactors = FALSE)
  export_data(df, "chem97", c("lea", "school"), gz = TRUE)
}
machines_data <- function() {
  d <- as.data.frame(nlme::Machines)
  df <- data.frame(Worker = as.character(d$Worker), Machine = as.character(d$Machine),
                   score = d$score, stringsAsFactors = FALSE)
  export_data(df, "machines", c("Worker", "Machine"))
}
penicillin_data <- function() {
  d <- lme4::Penicillin
  df <- data.frame(plate = as.character(d$plate), sample = as.character(d$sample),
                   diameter = d$diameter, stringsAsFactors = FALSE)
  export_data(df, "penicillin", c("plate", "sample"))
}
insteval_data <- function() {
  d <- lme4::InstEval
  df <- data.frame(s = as.character(d$s), d = as.character(d$d), dept = as.character(d$dept),
                   service = as.character(d$service), y = d$y, stringsAsFactors = FALSE)
  export_data(df, "insteval", c("s", "d", "dept", "service"), gz = TRUE)
}
# Four levels: rows in c in b in a. b and c labels repeat across their parents (b1..b<k> in every a,
# c1..c<m> in every a:b): the model must spell the nesting (a:b, a:b:c) as lme4 requires.
sim4_data <- function() {
  set.seed(20261201)
  n_a <- 40
  rows <- list()
  for (i in seq_len(n_a)) {
    u_a <- rnorm(1, 0, 1.0); w <- round(rnorm(1), 6)
    n_b <- sample(6:10, 1)
    for (j in seq_len(n_b)) {
      ub <- MASS::mvrnorm(1, c(0, 0), matrix(c(0.49, 0.3 * 0.7 * 0.3, 0.3 * 0.7 * 0.3, 0.09), 2))
      n_c <- sample(4:8, 1)
      for (k in seq_len(n_c)) {
        u_c <- rnorm(1, 0, 0.5)
        n <- sample(6:14, 1)
        x <- round(rnorm(n), 6)
        y <- 2 + 0.5 * x + 0.8 * w + u_a + ub[1] + ub[2] * x + u_c + rnorm(n, 0, 1)
        rows[[length(rows) + 1]] <- data.frame(a = sprintf("a%02d", i), b = sprintf("b%d", j),
                                               c = sprintf("c%d", k), x = x, w = w,
                                               y = round(y, 6), stringsAsFactors = FALSE)
      }
    }
  }
  export_data(do.call(rbind, rows), "sim4", c("a", "b", "c"), gz = TRUE)
}
# Three levels with no variance at the middle level: the first seed (from 1) at which lme4's REML and
# ML estimates of the a:b variance are both exactly 0.
singular_data <- function() {
  make <- function(seed) {
    set.seed(seed)
    n_a <- 30; n_b <- 4; n <- 10
    a <- rep(sprintf("a%02d", seq_len(n_a)), each = n_b * n)
    b <- rep(rep(sprintf("b%d", seq_len(n_b)), each = n), n_a)
    x <- round(rnorm(length(a)), 6)
    u <- rnorm(n_a, 0, 0.8)[as.integer(factor(a))]
    y <- round(1 + 0.4 * x + u + rnorm(length(a)), 6)
    data.frame(a = a, b = b, x = x, y = y, stringsAsFactors = FALSE)
  }
  for (seed in 1:200) {
    df <- make(seed)
    ok <- all(sapply(c(TRUE, FALSE), function(reml) {
      m <- suppressMessages(lme4::lmer(y ~ x + (1 | a/b), df, REML = reml, control = .ctrl_ref))
      getME(m, "theta")[["b:a.(Intercept)"]] == 0
    }))
    if (ok) break
  }
  ex <- export_data(df, "singular_nested", c("a", "b"))
  ex$seed <- seed
  ex
}

# ---- cases -------------------------------------------------------------------------------------
cases <- list()
add <- function(case, formula, ex, description, notes = character(0), cr2_cluster = NULL,
                extra = NULL, polish_maxit = NULL)
  cases[[case]] <<- list(case = case, formula = formula, data = ex$data, file = ex$file,
                         ids = names(ex$data)[sapply(ex$data, is.factor)], description = description,
                         notes = notes, cr2_cluster = cr2_cluster, extra = extra, polish_maxit = polish_maxit)

wanted <- commandArgs(trailingOnly = TRUE)
want <- function(...) length(wanted) == 0 || any(c(...) %in% wanted)

if (want("eg_growth", "eg_intercepts", "eg_lowinc", "eg_hlm")) {
  eg <- egsingle_data()
  eg_note <- c(
    "egsingle (mlmRev): 7230 yearly math scores of 1721 children in 60 schools (the HLM manual's EG example).",
    "childid values are unique across schools already (each childid lies in one schoolid; see nesting), so (year | childid) and (year | schoolid:childid) define the same factor with different level names.",
    "black and hispanic are written as 0/1 numbers (in mlmRev they are factors with levels '0','1'), so the fixed effects are named 'black', 'hispanic'.",
    "year is mlmRev's centred study year (-2.5 .. 2.5; the HLM manual's YEAR). size and lowinc are school-level (constant within schoolid).")
  # The same model spelled with childid alone: its criterion and estimates, as a check.
  same_model <- function(other) function(cs) {
    res <- list()
    for (reml in c(TRUE, FALSE)) {
      m <- lme4::lmer(as.formula(other), data = cs$data, REML = reml, control = .ctrl_ref)
      res[[if (reml) "REML" else "ML"]] <- list(
        criterion = crit_of(m, reml), theta = I(unname(getME(m, "theta"))),
        fixef = I(unname(fixef(m))), ngrps = as.list(ngrps(m)))
    }
    list(same_model_other_spelling = c(list(formula = other), res))
  }
  add("eg_growth", "math ~ year + (year | schoolid) + (year | schoolid:childid)", eg,
      "Three-level growth model (HLM3): random intercept and year slope for children and for schools; child nesting spelled as lme4's interaction schoolid:childid.",
      eg_note, cr2_cluster = "schoolid",
      extra = same_model("math ~ year + (year | schoolid) + (year | childid)"))
  add("eg_intercepts", "math ~ year + (1 | schoolid/childid)", eg,
      "Three-level growth model with random intercepts only, nesting by lme4's '/' (schoolid + schoolid:childid, named 'childid:schoolid').",
      eg_note, cr2_cluster = "schoolid")
  add("eg_lowinc", "math ~ year * lowinc + (year | schoolid) + (year | childid)", eg,
      "Three-level growth with a school-level predictor (lowinc) of the school intercept and of the year slope; slopes random at levels 2 and 3.",
      eg_note, cr2_cluster = "schoolid")
  add("eg_hlm", "math ~ year * (black + hispanic + lowinc) + (year | schoolid) + (year | childid)", eg,
      "The HLM manual's EG model: level-2 (child) predictors black, hispanic and level-3 (school) predictor lowinc of the intercept and the year slope.",
      eg_note, cr2_cluster = "schoolid")
}
if (want("chem97")) {
  ch <- chem97_data()
  add("chem97", "score ~ gcsecnt + (1 | lea/school)", ch,
      "Chem97 (mlmRev): A-level chemistry scores of 31022 students in 2410 schools in 131 LEAs; schools nested in LEAs.",
      c("school ids are unique across LEAs in the data (each school lies in one lea; see nesting): lea/school and (1 | lea) + (1 | school) are the same model.",
        "gcsecnt is mlmRev's centred GCSE score (gcsescore - mean). The CSV is gzip-compressed."),
      cr2_cluster = "lea")
}
if (want("machines_nested", "machines_corr")) {
  ma <- machines_data()
  mnote <- c("Machines (nlme): 6 workers each tried 3 machines 3 times (54 rows). Worker is written as text; nlme's Worker is an ordered factor (levels 6<2<4<1<3<5), here a plain factor with levels 1..6 (order does not change the fit).",
             "Machine is a fixed factor with treatment contrasts, reference level A.")
  add("machines_nested", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", ma,
      "Machines: random worker intercept plus a worker-by-machine interaction (Worker:Machine nested in Worker).", mnote)
  add("machines_corr", "score ~ Machine + (Machine | Worker)", ma,
      "Machines: correlated random effects of all three machine contrasts by worker (3x3 covariance, 6 workers).",
      c(mnote, "6 workers for a 3x3 covariance matrix: see isSingular and the optimizer block for how well it is determined."))
}
if (want("sim4")) {
  s4 <- sim4_data()
  add("sim4", "y ~ x + w + (1 | a) + (1 + x | a:b) + (1 | a:b:c)", s4,
      "Simulated four-level data (rows in c in b in a), random intercepts at a, a:b and a:b:c and a random x slope at a:b.",
      c("Simulation in sim4_data() with set.seed(20261201): 40 a; 6-10 b per a; 4-8 c per b; 6-14 rows per c. True values: intercept 2, x 0.5, w 0.8 (w constant within a), sd(a) 1, sd(a:b intercept) 0.7, sd(a:b slope) 0.3, corr 0.3, sd(a:b:c) 0.5, sigma 1. Values rounded to 6 decimals.",
        "b and c labels repeat across parents (b1.. in every a; c1.. in every a:b): b is not nested in a, a:b is. The model spells the nesting with ':' as lme4 requires.",
        "The CSV is gzip-compressed."))
}
if (want("penicillin")) {
  pe <- penicillin_data()
  add("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", pe,
      "Penicillin (lme4): 144 diameters, 24 plates fully crossed with 6 samples (HCM2-like).", character(0))
}
if (want("insteval")) {
  ie <- insteval_data()
  add("insteval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", ie,
      "InstEval (lme4): 73421 ratings; students s (2972) crossed with lecturers d (1128), and dept:service (28 levels).",
      c("Only the needed columns are exported (s, d, dept, service, y); the CSV is gzip-compressed.",
        "Kenward-Roger is not computed: pbkrtest needs dense 73421 x 73421 matrices (43 GB each).",
        "timings_sec give the elapsed time of each lmer call on this shared 2-core machine (see machine.load_average_at_end); lmer_default_control is lme4's default lmerControl(), the one a user meets."))
}
if (want("singular_nested")) {
  sg <- singular_data()
  add("singular_nested", "y ~ x + (1 | a/b)", sg,
      "Simulated three-level data with zero variance at the middle level: lme4's estimate of the b:a variance is exactly 0 (theta on its bound) by REML and by ML.",
      c(sprintf(paste("Simulation in singular_data(): set.seed(%d) (the first seed from 1 at which REML and ML both put",
                      "theta['b:a.(Intercept)'] exactly at 0); 30 a x 4 b x 10 rows; y = 1 + 0.4 x + u_a + e,",
                      "sd(u_a) 0.8, sigma 1, no b effect. b labels (b1..b4) repeat across a."), sg$seed)))
}

t_all <- proc.time()
for (cs in cases) {
  if (!want(cs$case)) next
  run_case(cs)
}
cat(sprintf("total %.0f s\n", (proc.time() - t_all)[["elapsed"]]))
