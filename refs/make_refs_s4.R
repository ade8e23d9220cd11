# Reference numbers for the seminar's section-4 model: FEMALE random with no fixed effect.
#   HLM:  Y = B0 + B1*(FEMALE) + B2*(SES, group-mean centred) + R
#         B0 = G00 + G01*SECTOR + G02*MEANSES + U0 ; B1 = U1 ; B2 = G20 + G21*SECTOR + G22*MEANSES + U2
#   lme4: mathach ~ (sector + meanses) * cses + (1 + female + cses | school)
# Run from this folder:  Rscript make_refs_s4.R   (writes hsb/S4.json and hsb/S4_<method>_ranef_school.csv)
suppressPackageStartupMessages({
  library(lme4); library(clubSandwich); library(jsonlite)
})
hsb <- read.csv("../../shared/data/hsb.csv", colClasses = c(school = "character"))
form <- mathach ~ (sector + meanses) * cses + (1 + female + cses | school)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
ctrl2 <- lmerControl(optimizer = "nloptwrap",
                     optCtrl = list(algorithm = "NLOPT_LN_BOBYQA", xtol_abs = 1e-14, ftol_abs = 1e-16,
                                    xtol_rel = 0, ftol_rel = 0, maxeval = 1e5),
                     check.conv.singular = "ignore")

# HLM-style statistics, straight from their definitions (docs/hlm-statistics.md sections 1 and 2),
# school by school: OLS of y on Z_j = (1, female, cses) over schools where Z_j has full rank.
hlm_stats <- function(tau, s2, gamma) {
  rel <- list(); chis <- c(0, 0, 0); used <- 0
  relsum <- c(0, 0, 0)
  for (s in unique(hsb$school)) {
    d <- hsb[hsb$school == s, ]
    Z <- cbind(1, d$female, d$cses)
    ZtZ <- crossprod(Z)
    if (qr(Z)$rank < 3) next
    used <- used + 1
    b <- solve(ZtZ, crossprod(Z, d$mathach))
    v <- s2 * diag(solve(ZtZ))
    w <- c(1, d$sector[1], d$meanses[1])
    fit <- c(sum(gamma[c(1, 2, 3)] * w), 0, sum(gamma[c(4, 5, 6)] * w))
    chis <- chis + (b - fit)^2 / v
    relsum <- relsum + diag(tau) / (diag(tau) + v)
  }
  list(coefficients = c("(Intercept)", "female", "cses"), reliability = relsum / used,
       chisq = chis, chisq_df = c(used - 3, used, used - 3), groups_used = used)
}

# GLS at given tau and sigma2, group by group (no lme4): beta, model SE, CR0 SE.
gls_at <- function(tau, s2) {
  X <- model.matrix(~ (sector + meanses) * cses, hsb)
  M <- 0; XVy <- 0
  pieces <- list()
  for (s in unique(hsb$school)) {
    idx <- which(hsb$school == s)
    Z <- cbind(1, hsb$female[idx], hsb$cses[idx])
    V <- Z %*% tau %*% t(Z) + s2 * diag(length(idx))
    Vi <- solve(V)
    Xj <- X[idx, , drop = FALSE]
    M <- M + t(Xj) %*% Vi %*% Xj
    XVy <- XVy + t(Xj) %*% Vi %*% hsb$mathach[idx]
    pieces[[s]] <- list(Xj = Xj, Vi = Vi, y = hsb$mathach[idx])
  }
  Minv <- solve(M); beta <- drop(Minv %*% XVy)
  meat <- 0
  for (p in pieces) {
    sj <- t(p$Xj) %*% p$Vi %*% (p$y - p$Xj %*% beta)
    meat <- meat + sj %*% t(sj)
  }
  VR <- Minv %*% meat %*% Minv
  list(fixed_names = colnames(X), beta = beta, se = sqrt(diag(Minv)), cr0_se = sqrt(diag(VR)))
}

one <- function(reml) {
  crit <- function(m) if (reml) REMLcrit(m) else deviance(m)
  # bobyqa from lme4's default start stops at a singular point far from the optimum here
  # (REMLcrit 46635.97); nloptwrap's BOBYQA reaches a lower one. The reference is bobyqa restarted
  # from the better of the two, so that both optimizers agree at the point we compare against.
  first <- lmer(form, hsb, REML = reml, control = ctrl)
  chk <- lmer(form, hsb, REML = reml, control = ctrl2)
  best <- if (crit(chk) < crit(first)) chk else first
  fit <- lmer(form, hsb, REML = reml, control = ctrl, start = list(theta = getME(best, "theta")))
  from_default_start <- list(theta = unname(getME(first, "theta")), objective = crit(first),
                             isSingular = isSingular(first))
  vc <- VarCorr(fit)$school
  fe <- fixef(fit)
  cr0 <- as.matrix(vcovCR(fit, cluster = hsb$school, type = "CR0"))
  re <- ranef(fit, condVar = TRUE)$school
  pv <- attr(re, "postVar")
  out <- data.frame(group = rownames(re))
  for (k in seq_along(colnames(re))) out[[paste0("mode:", colnames(re)[k])]] <- re[[k]]
  for (k in seq_along(colnames(re))) out[[paste0("condvar:", colnames(re)[k])]] <- pv[k, k, ]
  write.csv(out, sprintf("hsb/S4_%s_ranef_school.csv", if (reml) "REML" else "ML"), row.names = FALSE)
  s2 <- sigma(fit)^2
  list(
    method = if (reml) "REML" else "ML",
    optimizer = list(feval = fit@optinfo$feval, conv = fit@optinfo$conv$opt,
                     messages = fit@optinfo$conv$lme4$messages),
    fixed_effects = list(names = names(fe), estimate = unname(fe),
                         se = unname(sqrt(diag(as.matrix(vcov(fit))))),
                         vcov = unname(as.matrix(vcov(fit)))),
    cluster_robust = list(CR0 = list(se = unname(sqrt(diag(cr0))))),
    variance_components = list(terms = colnames(vc), cov = unname(matrix(vc, nrow(vc))),
                               theta = unname(getME(fit, "theta")), residual_variance = s2),
    fit_statistics = list(logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit),
                          REMLcrit = if (reml) REMLcrit(fit) else NULL,
                          ML_deviance = if (reml) NULL else deviance(fit),
                          isSingular = isSingular(fit)),
    hlm_style_stats_at_lme4_estimates = hlm_stats(matrix(vc, nrow(vc)), s2, unname(fe)),
    bobyqa_from_default_start = from_default_start,
    check_second_tight_optimizer = list(
      theta = unname(getME(chk, "theta")), fixef = unname(fixef(chk)),
      objective = crit(chk), objective_minus_reference = crit(chk) - crit(fit),
      max_abs_diff_theta = max(abs(getME(chk, "theta") - getME(fit, "theta"))),
      max_abs_diff_fixef = max(abs(fixef(chk) - fe)))
  )
}

# HLM 6's printed estimates for this model (the seminar, section 4).
tau_hlm <- matrix(c(3.56382, -2.00755, 0.33526,
                    -2.00755, 2.32409, -0.23060,
                    0.33526, -0.23060, 0.10378), 3, 3, byrow = TRUE)
s2_hlm <- 36.32580
at_hlm <- gls_at(tau_hlm, s2_hlm)
at_hlm$tau <- tau_hlm; at_hlm$sigma2 <- s2_hlm
at_hlm$hlm_style_stats <- hlm_stats(tau_hlm, s2_hlm, at_hlm$beta)

res <- list(
  case = "S4",
  formula = deparse(form),
  software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  clubSandwich = as.character(packageVersion("clubSandwich"))),
  REML = one(TRUE), ML = one(FALSE),
  at_hlm_printed_variance_components = at_hlm
)
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE, null = "null"), "hsb/S4.json")
