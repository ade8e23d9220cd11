# Reference numbers for pooling multiply imputed data sets (Rubin's rules, Barnard-Rubin df, the D1
# test, averaged variance components) with mitml, on HSB with values deleted at random.
#   1. Reads ../../shared/data/hsb.csv, deletes ~15% of mathach and ~15% of ses completely at random
#      (fixed seed), imputes m = 5 data sets with mice (method "norm", fixed seed; predictors mathach,
#      ses, sector, meanses), recomputes cses = ses - school mean of ses in each imputed data set and
#      writes hsb/mi/imp<k>.csv.gz (columns school, mathach, ses, cses, meanses, sector).
#   2. Re-reads those files and fits  mathach ~ (sector + meanses) * cses + (cses | school)  by REML
#      with lme4 (tight bobyqa) on each.
#   3. Pools with mitml::testEstimates(extra.pars = TRUE) with df.com = 157 (HLM's J - S_q - 1 for
#      every gamma of this model) and without df.com (Rubin's classic df), and tests
#      sector = 0, sector:cses = 0 with mitml::testConstraints(method = "D1") with and without
#      df.com (with df.com mitml uses Reiter's (2007) small-sample denominator df).
#   Writes hsb/mitml.json (per-imputation estimates too, for diagnosis).
# Run from this folder:  cd /work/main/refs && Rscript make_refs_mitml.R
# Needs R with lme4, jsonlite, mice and mitml (Debian: apt-get install -y r-cran-mitml r-cran-mice).
suppressPackageStartupMessages({
  library(lme4); library(mice); library(mitml); library(jsonlite)
})
hsb <- read.csv("../../shared/data/hsb.csv", colClasses = c(school = "character"))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
form <- mathach ~ (sector + meanses) * cses + (cses | school)
m <- 5
df_com <- 157
p_miss <- 0.15
seed_miss <- 20240601
seed_mice <- 20240602

# ---- 1. delete at random and impute ------------------------------------------------------------
dat <- hsb[, c("school", "mathach", "ses", "meanses", "sector")]
set.seed(seed_miss)
n <- nrow(dat)
miss_y <- runif(n) < p_miss
miss_x <- runif(n) < p_miss
dat$mathach[miss_y] <- NA
dat$ses[miss_x] <- NA

meth <- make.method(dat)
meth[] <- ""
meth[c("mathach", "ses")] <- "norm"
pred <- make.predictorMatrix(dat)
pred[, "school"] <- 0       # the school id is not a predictor (meanses carries the school level)
pred["school", ] <- 0
imp <- mice(dat, m = m, method = meth, predictorMatrix = pred, seed = seed_mice, maxit = 10,
            printFlag = FALSE)

dir.create("hsb/mi", showWarnings = FALSE, recursive = TRUE)
files <- character(m)
for (k in seq_len(m)) {
  d <- complete(imp, k)
  d$cses <- d$ses - ave(d$ses, d$school)
  d <- d[, c("school", "mathach", "ses", "cses", "meanses", "sector")]
  files[k] <- sprintf("hsb/mi/imp%d.csv.gz", k)
  con <- gzfile(files[k], "w")
  write.csv(d, con, row.names = FALSE)   # 15 significant digits
  close(con)
}

# ---- 2. fit each imputed data set (as read back from the files the tests read) ------------------
imps <- lapply(files, function(f) read.csv(f, colClasses = c(school = "character")))
fits <- lapply(imps, function(d) lmer(form, data = d, REML = TRUE, control = ctrl))

# ---- 3. pool -----------------------------------------------------------------------------------
est_tab <- function(te) {
  e <- te$estimates
  lapply(setNames(seq_len(nrow(e)), rownames(e)), function(i) {
    list(estimate = e[i, "Estimate"], se = e[i, "Std.Error"], t = e[i, "t.value"], df = e[i, "df"],
         p = e[i, "P(>|t|)"], riv = e[i, "RIV"], fmi = e[i, "FMI"])
  })
}
te <- testEstimates(fits, extra.pars = TRUE, df.com = df_com)
te_inf <- testEstimates(fits, extra.pars = TRUE)
extra <- te$extra.pars
extra_list <- as.list(setNames(extra[, "Estimate"], rownames(extra)))

d1_test <- function(tc) {
  list(F = tc$test[1, "F.value"], df1 = tc$test[1, "df1"], df2 = tc$test[1, "df2"],
       p = tc$test[1, "P(>F)"], riv = tc$test[1, "RIV"])
}
cons <- c("sector", "`sector:cses`")   # backticks: ":" would be R's sequence operator
tc <- testConstraints(fits, constraints = cons, method = "D1", df.com = df_com)
tc_inf <- testConstraints(fits, constraints = cons, method = "D1")

per_imp <- lapply(seq_len(m), function(k) {
  f <- fits[[k]]
  vc <- VarCorr(f)$school
  list(
    file = files[k],
    n_missing_mathach = sum(miss_y), n_missing_ses = sum(miss_x),
    estimate = as.list(fixef(f)),
    se = as.list(sqrt(diag(as.matrix(vcov(f))))),
    vcov = unname(lapply(seq_len(nrow(vcov(f))), function(i) as.numeric(as.matrix(vcov(f))[i, ]))),
    tau = list(`(Intercept)` = vc[1, 1], cses = vc[2, 2], `(Intercept)~~cses` = vc[1, 2]),
    sigma2 = sigma(f)^2,
    REMLcrit = REMLcrit(f)
  )
})

out <- list(
  model = "mathach ~ (sector + meanses) * cses + (cses | school)",
  method = "REML",
  m = m,
  df_com = df_com,
  missing = list(p = p_miss, seed = seed_miss, n = n, n_missing_mathach = sum(miss_y),
                 n_missing_ses = sum(miss_x), mechanism = "MCAR, independent uniform draws per row and variable"),
  imputation = list(package = "mice", method = "norm", m = m, maxit = 10, seed = seed_mice,
                    predictors = c("mathach", "ses", "meanses", "sector"),
                    after = "cses = ses - school mean of the imputed ses (ave(ses, school)); meanses kept as given"),
  files = files,
  fixed = est_tab(te),
  fixed_df_com_inf = est_tab(te_inf),
  variance_components = extra_list,
  D1 = list(constraints = cons, df_com = d1_test(tc), no_df_com = d1_test(tc_inf)),
  per_imputation = per_imp,
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  mice = as.character(packageVersion("mice")), mitml = as.character(packageVersion("mitml")),
                  jsonlite = as.character(packageVersion("jsonlite"))),
  notes = c(
    "fixed: mitml::testEstimates(fits, extra.pars = TRUE, df.com = 157): Qbar, sqrt(T), Barnard-Rubin df, RIV = (1+1/m)B/Ubar, FMI = (RIV + 2/(df+3))/(RIV+1) with the Barnard-Rubin df.",
    "per_imputation: each lme4 fit (estimates, SEs, vcov rows in the order of estimate, tau, sigma2, REMLcrit), so that the pooling formulas can be checked on lme4's own numbers.",
    "fixed_df_com_inf: the same without df.com (classic Rubin df (m-1)(1+1/RIV)^2, and FMI with it).",
    "Ubar is the mean of lme4's model-based squared SEs (vcov), B has divisor m - 1.",
    "variance_components: testEstimates' extra.pars, the arithmetic mean over the m fits of lme4's VarCorr (variances, covariance), the residual variance and the ICC tau00/(tau00+sigma2).",
    "D1$df_com: testConstraints(method = 'D1', df.com = 157): F = Qbar'Ubar^-1 Qbar/(k(1+r1)), r1 = (1+1/m)tr(B Ubar^-1)/k, denominator df by Reiter (2007) (mitml:::.D1 when df.com is given).",
    "D1$no_df_com: testConstraints(method = 'D1') without df.com: denominator df 4 + (t-4)[1 + (1-2/t)/r1]^2, t = k(m-1) (Li, Raghunathan & Rubin 1991).",
    "testConstraints takes the gradient of the constraints by numericDeriv (forward differences): for these linear constraints exact to about 1e-8.",
    "lme4 fits with lmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-12, maxfun = 1e5)) on the data read back from hsb/mi/imp<k>.csv.gz."
  )
)
write_json(out, "hsb/mitml.json", auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote hsb/mitml.json and", m, "files in hsb/mi/\n")
print(te)
print(tc)
print(tc_inf)
