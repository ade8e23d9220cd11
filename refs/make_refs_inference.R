# Reference numbers for inference on the HSB models: contrasts / Wald tests (lmerTest Satterthwaite
# and Kenward-Roger, plain Wald chi-square, clubSandwich CR2), profile and Wald confidence intervals,
# likelihood-ratio tests (anova) and lmerTest::ranova.
#   M4 : mathach ~ (sector + meanses) * cses + (cses | school)
#   M4b: mathach ~ (sector + meanses) * cses + (1 | school)
#   C1 : mathach ~ cses + meanses + (1 | school)        (contextual-effect model)
#   M3 : mathach ~ cses + (cses | school)
# Each fitted by REML and by ML with lmerTest::lmer and the tight bobyqa control.
# Run from this folder:  Rscript make_refs_inference.R   (writes hsb/inference.json)
# Any call that fails is recorded as {"error": "..."}; warnings are kept next to the numbers
# under "warnings".
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(clubSandwich); library(jsonlite)
})
hsb <- read.csv("../../shared/data/hsb.csv", colClasses = c(school = "character"))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

forms <- list(
  M4  = mathach ~ (sector + meanses) * cses + (cses | school),
  M4b = mathach ~ (sector + meanses) * cses + (1 | school),
  C1  = mathach ~ cses + meanses + (1 | school),
  M3  = mathach ~ cses + (cses | school)
)

# ---- helpers -----------------------------------------------------------------------------------
# Evaluate expr; keep its value, its warnings and (if it fails) the error text.
run <- function(expr) {
  warns <- character(0)
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(list(msg = conditionMessage(e)), class = "run_err")),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  if (inherits(val, "run_err")) return(list(error = val$msg, warnings = I(unique(warns))))
  list(value = val, warnings = I(unique(warns)))
}
# A table (data.frame or matrix) as a list of rows, each row a named list; the row name goes in "row".
rows <- function(tab) {
  tab <- as.data.frame(tab, check.names = FALSE)
  lapply(seq_len(nrow(tab)), function(i) {
    r <- lapply(tab[i, , drop = FALSE], function(v) if (is.factor(v)) as.character(v) else v)
    c(list(row = rownames(tab)[i]), r)
  })
}
# run() on something that gives a table; the result is {rows, warnings} or {error, warnings}.
run_table <- function(expr) {
  r <- run(expr)
  if (!is.null(r$error)) return(r)
  list(rows = rows(r$value), warnings = r$warnings)
}
mat <- function(m) unname(as.matrix(m))  # matrix -> JSON list of rows

# ---- fits --------------------------------------------------------------------------------------
fit_warnings <- list()
fits <- list()
for (nm in names(forms)) for (meth in c("REML", "ML")) {
  # The call is built with the formula and REML flag written in, so that functions which re-evaluate
  # the stored call (update() inside lmerTest::ranova) refit the right model.
  r <- run(eval(bquote(lmerTest::lmer(.(forms[[nm]]), data = hsb, REML = .(meth == "REML"),
                                      control = ctrl))))
  if (!is.null(r$error)) stop(sprintf("fit %s %s failed: %s", nm, meth, r$error))
  fits[[nm]][[meth]] <- r$value
  fit_warnings[[paste(nm, meth)]] <- r$warnings
}

# ---- contrasts ---------------------------------------------------------------------------------
e <- function(k, p) { v <- numeric(p); v[k] <- 1; v }
contrasts_for <- function(nm, fe_names) {
  p <- length(fe_names)
  ix <- function(n) match(n, fe_names)
  L <- switch(nm,
    M4 = list(
      sector = rbind(e(ix("sector"), p)),
      contextual_like = rbind(e(ix("meanses"), p) - e(ix("cses"), p)),
      joint_sector = rbind(e(ix("sector"), p), e(ix("sector:cses"), p)),
      three = rbind(e(ix("meanses"), p), e(ix("sector:cses"), p), e(ix("meanses:cses"), p))),
    M4b = list(
      joint_sector = rbind(e(ix("sector"), p), e(ix("sector:cses"), p)),
      sector = rbind(e(ix("sector"), p))),
    C1 = list(
      contextual = rbind(e(ix("meanses"), p) - e(ix("cses"), p)),
      both = rbind(e(ix("cses"), p), e(ix("meanses"), p))),
    M3 = list(
      cses = rbind(e(ix("cses"), p))))
  lapply(L, function(m) { colnames(m) <- fe_names; m })
}

wald_chisq <- function(fit, L) {
  b <- fixef(fit); V <- as.matrix(vcov(fit))
  Lb <- drop(L %*% b)
  W <- drop(t(Lb) %*% solve(L %*% V %*% t(L), Lb))
  list(Lb = I(Lb), chisq = W, df = nrow(L), p_value = pchisq(W, nrow(L), lower.tail = FALSE))
}

one_contrast <- function(fit, L, reml) {
  out <- list(L = mat(L), L_columns = colnames(L))
  ddfs <- if (reml) c(Satterthwaite = "Satterthwaite", KenwardRoger = "Kenward-Roger")
          else c(Satterthwaite = "Satterthwaite")
  for (k in names(ddfs)) {
    out[[k]] <- list(
      # joint = FALSE: one t-test per row of L (Estimate, Std. Error, df, t value, lower, upper, Pr(>|t|))
      rowwise = run_table(lmerTest::contest(fit, L, ddf = ddfs[[k]], joint = FALSE)),
      # joint = TRUE: F-test of all rows (Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F))
      joint = run_table(lmerTest::contest(fit, L, ddf = ddfs[[k]], joint = TRUE)))
  }
  if (!reml) out$KenwardRoger <- list(error = "not computed: Kenward-Roger needs a REML fit (lmerTest refuses ML)")
  out$wald_chisq_model_vcov <- wald_chisq(fit, L)
  out$clubSandwich_CR2 <- list(
    Wald_test = run_table(clubSandwich::Wald_test(fit, constraints = L, vcov = "CR2",
                                                  test = c("chi-sq", "Naive-F", "HTZ"), tidy = TRUE)))
  if (nrow(L) == 1) {
    out$clubSandwich_CR2$linear_contrast <- run_table(clubSandwich::linear_contrast(
      fit, vcov = "CR2", contrasts = L, test = "Satterthwaite", p_values = TRUE))
  }
  out
}

# ---- per-model block ---------------------------------------------------------------------------
model_block <- function(nm, meth) {
  fit <- fits[[nm]][[meth]]; reml <- meth == "REML"
  fe <- fixef(fit); V <- as.matrix(vcov(fit))
  vc <- VarCorr(fit)$school
  blk <- list(
    formula = paste(deparse(forms[[nm]]), collapse = " "),
    method = meth,
    fit_warnings = fit_warnings[[paste(nm, meth)]],
    optimizer = list(feval = fit@optinfo$feval, conv = fit@optinfo$conv$opt,
                     messages = I(as.character(unlist(fit@optinfo$conv$lme4$messages))),
                     isSingular = isSingular(fit)),
    fixef = as.list(fe),
    fixef_names = names(fe),
    vcov = mat(V),
    theta = I(unname(getME(fit, "theta"))),
    theta_names = I(names(getME(fit, "theta"))),
    sigma2 = sigma(fit)^2,
    varcorr = list(terms = I(colnames(vc)), cov = mat(vc)),
    logLik = as.numeric(logLik(fit)),
    logLik_df = attr(logLik(fit), "df"),
    AIC = AIC(fit), BIC = BIC(fit),
    nobs = nobs(fit),
    ngroups = unname(ngrps(fit)[["school"]])
  )
  if (reml) blk$REMLcrit <- REMLcrit(fit) else blk$deviance <- deviance(fit)
  Ls <- contrasts_for(nm, names(fe))
  blk$contrasts <- lapply(Ls, function(L) one_contrast(fit, L, reml))
  if (nm %in% c("M4", "C1")) {
    blk$confint_profile <- run_table(confint(fit, method = "profile", oldNames = FALSE, level = 0.95))
    blk$confint_Wald <- run_table(confint(fit, method = "Wald", level = 0.95))
  }
  blk
}

models <- list()
for (nm in names(forms)) for (meth in c("REML", "ML")) {
  cat("model", nm, meth, "\n")
  models[[nm]][[meth]] <- model_block(nm, meth)
}

# ---- likelihood-ratio tests --------------------------------------------------------------------
anovas <- list(
  REML_M4b_vs_M4_refitFALSE = run_table(anova(fits$M4b$REML, fits$M4$REML, refit = FALSE)),
  ML_M4b_vs_M4 = run_table(anova(fits$M4b$ML, fits$M4$ML)),
  ML_C1_vs_M4 = run_table(anova(fits$C1$ML, fits$M4$ML))
)
anovas$row_names <- "rows are named by the model object names used in the anova() call (fits$...)"
rand_lmerTest <- list(
  M4_REML = run_table(lmerTest::ranova(fits$M4$REML)),
  M4_ML = run_table(lmerTest::ranova(fits$M4$ML))
)

# ---- notes and output --------------------------------------------------------------------------
notes <- c(
  "All fits: lmerTest::lmer(formula, hsb, REML=..., control=lmerControl(optimizer='bobyqa', optCtrl=list(rhoend=1e-12, maxfun=1e5))).",
  "hsb.csv read with school as character; cses and meanses are used as written in the file.",
  "Tables (contest, Wald_test, linear_contrast, confint, anova, ranova) are lists of rows; 'row' holds the R row name; NA/NaN/Inf are written as null (e.g. clubSandwich's chi-sq df_denom, which is Inf).",
  "contrasts.*.Satterthwaite/KenwardRoger.rowwise = lmerTest::contest(fit, L, ddf, joint=FALSE) (one t-test per row of L); .joint = contest(..., joint=TRUE) (F-test). Both are given for every L.",
  "Kenward-Roger is computed for REML fits only.",
  "wald_chisq_model_vcov: (Lb)'(L V L')^{-1}(Lb) with V = vcov(fit) (model-based, unadjusted), df = nrow(L), chi-square p-value.",
  "clubSandwich_CR2.Wald_test: Wald_test(fit, constraints=L (matrix), vcov='CR2', test=c('chi-sq','Naive-F','HTZ'), tidy=TRUE), clusters = school (clubSandwich default for lmerMod). Its Fstat is on the F scale for every test: for 'chi-sq' the statistic is Q = df_num * Fstat with p = P(chi2_{df_num} > Q) and df_denom = Inf (null); 'Naive-F' uses df_denom = J - 1 = 159; 'HTZ' has its own scaled Fstat and df_denom.",
  "clubSandwich_CR2.linear_contrast (1-row L only): linear_contrast(fit, vcov='CR2', contrasts=L, test='Satterthwaite', p_values=TRUE).",
  "confint_profile: confint(fit, method='profile', oldNames=FALSE, level=0.95) for M4 and C1; warnings emitted by lme4 during profiling are stored under 'warnings' next to the numbers.",
  "confint_profile for REML fits: lme4 (1.1.31) does not refuse or warn, but its profile (lme4:::devfun2) starts with refitML(fit), so the REML 'profile' intervals are the ML profile-likelihood intervals (they equal the ML fit's intervals to ~1e-9). They are NOT REML-based intervals.",
  "confint_profile for M4: the slope-intercept correlation has a flat, non-monotonic profile; lme4 warns and returns [-1, 1] for it, and the lower limit of sd_cses|school is 0 (the slope variance is not distinguishable from 0: ranova LRT p ~ 0.56-0.61).",
  "confint_Wald: confint(fit, method='Wald'); rows for variance parameters are null (lme4 gives NA).",
  "anova: lme4's anova for merMod objects; REML comparison uses refit=FALSE (REML likelihoods, same fixed effects); ML comparisons are between ML fits.",
  "rand_lmerTest: lmerTest::ranova(fit) (reduces each random-effect term, refits with the fit's own REML/ML setting)."
)

res <- list(
  case = "inference",
  software = list(R = R.version.string,
                  lme4 = as.character(packageVersion("lme4")),
                  lmerTest = as.character(packageVersion("lmerTest")),
                  pbkrtest = as.character(packageVersion("pbkrtest")),
                  clubSandwich = as.character(packageVersion("clubSandwich")),
                  nlme = as.character(packageVersion("nlme")),
                  jsonlite = as.character(packageVersion("jsonlite"))),
  data = list(file = "../../shared/data/hsb.csv", nobs = nrow(hsb), nschools = length(unique(hsb$school))),
  models = models,
  anova = anovas,
  rand_lmerTest = rand_lmerTest,
  notes = notes
)
write_json(res, "hsb/inference.json", auto_unbox = TRUE, digits = NA, pretty = TRUE,
           na = "null", null = "null")
cat("wrote hsb/inference.json\n")
