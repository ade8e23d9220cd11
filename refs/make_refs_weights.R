# Reference numbers for precision weights (lme4's `weights=`, multilevel's `precision_weights=`).
# lmer's weights make Var(e_i) = sigma2 / w_i; its deviance subtracts ldW = sum(log w_i):
#   ML:   ldL2 - ldW + N (1 + log(2 pi pwrss / N))
#   REML: ldL2 + ldRX2 - ldW + (N - p)(1 + log(2 pi pwrss / (N - p)))
# The weight is deterministic and built identically in Python (tests/test_precision_weights.py):
#   w = 1 + ((row number - 1) mod 5) / 2        (1, 1.5, 2, 2.5, 3, 1, ... in the file's row order)
# Models on the HSB data (src/multilevel/datasets/data/hsb.csv), each by REML and by ML:
#   RI: mathach ~ cses + meanses + sector + (1 | school)
#   RS: mathach ~ (sector + meanses) * cses + (cses | school)
# Not recorded: lme4's profile and bootstrap intervals, which are wrong with prior weights (profile's devfun2
# leaves out ldW: lme4 issue #192; on these data its fixed-effect intervals are ~0.02 wide; bootstrap:
# issue #386). multilevel's are checked by their definitions in the tests instead.
# Also recorded: what lme4 does with a zero weight (row 3 set to 0): an infinite criterion.
# Run from this folder:  Rscript make_refs_weights.R   (writes hsb/precision_weights.json)
suppressPackageStartupMessages({ library(lme4); library(lmerTest); library(jsonlite) })
hsb <- read.csv("../src/multilevel/datasets/data/hsb.csv", colClasses = c(school = "character"))
hsb$w <- 1 + ((seq_len(nrow(hsb)) - 1) %% 5) / 2
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
forms <- list(
  RI = mathach ~ cses + meanses + sector + (1 | school),
  RS = mathach ~ (sector + meanses) * cses + (cses | school)
)
out <- list(
  weight = "w = 1 + ((row - 1) %% 5) / 2 (row = 1-based row number of hsb.csv)",
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  sum_log_w = sum(log(hsb$w)),
  models = list()
)
for (nm in names(forms)) for (meth in c("REML", "ML")) {
  m <- eval(bquote(lmerTest::lmer(.(forms[[nm]]), data = hsb, weights = w, REML = .(meth == "REML"),
                                  control = ctrl)))
  co <- summary(m)$coefficients  # lmerTest: Satterthwaite df
  vc <- as.data.frame(VarCorr(m))
  dc <- getME(m, "devcomp")$cmp
  out$models[[nm]][[meth]] <- list(
    formula = paste(deparse(forms[[nm]]), collapse = ""),
    fixef = as.list(fixef(m)),
    se = as.list(setNames(co[, "Std. Error"], rownames(co))),
    df_satterthwaite = as.list(setNames(co[, "df"], rownames(co))),
    sigma = sigma(m),
    sigma2 = sigma(m)^2,
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
                                                          var2 = vc$var2[i], vcov = vc$vcov[i])),
    theta = unname(getME(m, "theta")),
    criterion = if (meth == "REML") REMLcrit(m) else deviance(m),
    loglik = as.numeric(logLik(m)),
    ldL2 = unname(dc["ldL2"]), ldRX2 = unname(dc["ldRX2"]), pwrss = unname(dc["pwrss"]),
    nobs = nobs(m)
  )
}
# A zero weight: lme4 fits without a word but its criterion is infinite (log 0 in ldW).
hsb0 <- hsb; hsb0$w[3] <- 0
m0 <- suppressWarnings(lmer(forms$RI, data = hsb0, weights = w, REML = TRUE, control = ctrl))
out$zero_weight <- list(row = 3, REMLcrit = if (is.finite(REMLcrit(m0))) REMLcrit(m0) else "Inf")
dir.create("hsb", showWarnings = FALSE)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "hsb/precision_weights.json")
