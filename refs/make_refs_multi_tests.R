# Reference numbers for the tests and model comparisons of models with several grouping factors
# (issue 14): lmerTest's contest (Satterthwaite F, and pbkrtest's Kenward-Roger F through lmerTest)
# for joint hypotheses at the polished optimum of refs/multi/<case>.json (the fit rebuilt there by
# lmer with optimizer = NULL, as make_refs_multi.R does), and anova() of egsingle models.
#
# Run from this folder:  Rscript make_refs_multi_tests.R      -> multi/inference/tests.json (a folder of its own: multi/*.json are the fit cases)
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)
})
invisible(Sys.setlocale("LC_COLLATE", "C"))
software <- list(R = R.version.string)
for (p in c("lme4", "lmerTest", "pbkrtest", "Matrix", "jsonlite")) software[[p]] <- as.character(packageVersion(p))

read_case <- function(case) {
  ref <- fromJSON(file.path("multi", paste0(case, ".json")), simplifyVector = TRUE)
  f <- file.path("multi", ref$data_file)
  cls <- setNames(rep("character", length(ref$id_columns)), ref$id_columns)
  d <- read.csv(f, colClasses = cls)
  list(ref = ref, data = d)
}

# the fit at the polished REML optimum of the reference (no optimisation: theta exactly as given)
polished_fit <- function(cs) {
  th <- cs$ref$REML$theta$values
  .d <<- cs$data
  fit <- lmer(as.formula(cs$ref$formula), data = .d, REML = TRUE, start = list(theta = th),
              control = lmerControl(optimizer = NULL, calc.derivs = FALSE))
  stopifnot(isTRUE(all.equal(unname(getME(fit, "theta")), unname(th), tolerance = 0)))
  stopifnot(isTRUE(all.equal(REMLcrit(fit), cs$ref$REML$criterion$value, tolerance = 1e-12)))
  as_lmerModLmerTest(fit)
}

contest_ref <- function(case, rows, kr) {
  cs <- read_case(case)
  fit <- polished_fit(cs)
  nm <- names(fixef(fit))
  L <- matrix(0, length(rows), length(nm), dimnames = list(NULL, nm))
  for (i in seq_along(rows)) L[i, rows[i]] <- 1
  out <- list(case = case, formula = cs$ref$formula, method = "REML", contrast = paste(rows, "= 0", collapse = ", "),
              L = L, fixed_effects = nm)
  s <- contest(fit, L, joint = TRUE, ddf = "Satterthwaite")
  out$satterthwaite <- list(F = s[["F value"]], num_df = s[["NumDF"]], den_df = s[["DenDF"]], p = s[["Pr(>F)"]],
                            source = "lmerTest contest(fit, L, joint = TRUE, ddf = 'Satterthwaite')")
  if (kr) {
    k <- contest(fit, L, joint = TRUE, ddf = "Kenward-Roger")
    out$kenward_roger <- list(F = k[["F value"]], num_df = k[["NumDF"]], den_df = k[["DenDF"]], p = k[["Pr(>F)"]],
                              source = "lmerTest contest(fit, L, joint = TRUE, ddf = 'Kenward-Roger') (pbkrtest)")
  } else {
    out$kenward_roger <- list(skipped = sprintf("pbkrtest forms dense n x n matrices (n = %d rows)", nrow(cs$data)))
  }
  out
}

anova_ref <- function(name, small, big, reml, refit) {
  d <- read_case("eg_growth")$data
  .d <<- d
  ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
  m1 <- lmer(as.formula(small), data = .d, REML = reml, control = ctrl)
  m2 <- lmer(as.formula(big), data = .d, REML = reml, control = ctrl)
  a <- anova(m1, m2, refit = refit)
  list(name = name, small = small, big = big, method = if (reml) "REML" else "ML", refit = refit,
       npar = I(a[["npar"]]), deviance = I(a[["deviance"]]), logLik = I(a[["logLik"]]),
       AIC = I(a[["AIC"]]), BIC = I(a[["BIC"]]), chisq = a[["Chisq"]][2], df = a[["Df"]][2], p = a[["Pr(>Chisq)"]][2],
       source = sprintf("anova(m1, m2, refit = %s); lmer with bobyqa rhoend = 1e-12", refit))
}

out <- list(
  software = software,
  tests = list(
    contest_ref("eg_hlm", c("black", "hispanic"), kr = TRUE),
    contest_ref("eg_growth", c("year"), kr = TRUE),
    contest_ref("chem97", c("gcsecnt"), kr = FALSE)
  ),
  anova = list(
    anova_ref("intercepts_reml", "math ~ year + (1 | schoolid)", "math ~ year + (1 | schoolid/childid)", TRUE, FALSE),
    anova_ref("growth_reml", "math ~ year + (year | schoolid)", "math ~ year + (year | schoolid) + (year | schoolid:childid)", TRUE, FALSE),
    anova_ref("lowinc_ml", "math ~ year + (year | schoolid) + (year | schoolid:childid)",
              "math ~ year * lowinc + (year | schoolid) + (year | schoolid:childid)", TRUE, TRUE)
  )
)
dir.create(file.path("multi", "inference"), showWarnings = FALSE)
write_json(out, file.path("multi", "inference", "tests.json"), auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote multi/inference/tests.json\n")
