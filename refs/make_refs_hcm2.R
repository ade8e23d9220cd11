# Reference numbers for HCM2 (issue 14): a cross-classified model, pupils in neighbourhoods (rows)
# crossed with schools (columns), with a row predictor (dep, constant within a neighbourhood), a
# column predictor (sfree, constant within a school), a level-1 slope (ses) random over the rows and
# the column intercept random:
#     y ~ (dep + sfree) * ses + (1 + ses | nbhd) + (1 | school)
# i.e. HCM2's   y_ijk = pi_0jk + pi_1jk ses_ijk + e_ijk,
#               pi_0jk = theta_0 + gamma_01 dep_j + beta_01 sfree_k + b_00j + c_00k,
#               pi_1jk = theta_1 + gamma_11 dep_j + beta_11 sfree_k + b_10j.
# The data are simulated here (seed fixed) and written to hcm2/data/hcm2_sim.csv; both fits read that
# CSV back. REML and ML, lme4 with a tight bobyqa (rhoend 1e-12), then lmerTest's Satterthwaite df.
# Run from this folder:  Rscript make_refs_hcm2.R   (a few seconds).
suppressPackageStartupMessages({ library(lme4); library(lmerTest); library(jsonlite) })
invisible(Sys.setlocale("LC_COLLATE", "C"))
dir.create("hcm2/data", recursive = TRUE, showWarnings = FALSE)

set.seed(20261201)
J <- 40; K <- 25; N <- 1200
dep <- round(rnorm(J), 3); sfree <- round(rnorm(K), 3)
b <- cbind(rnorm(J, 0, 0.8), rnorm(J, 0, 0.35)); cc <- rnorm(K, 0, 0.6)
j <- sample.int(J, N, replace = TRUE)
# each pupil's school is near its neighbourhood (cells sparse, rows and columns linked), some far
k <- ifelse(runif(N) < 0.8, pmin(K, pmax(1, round(j * K / J + rnorm(N, 0, 2)))), sample.int(K, N, replace = TRUE))
ses <- round(rnorm(N), 3)
y <- 10 + 0.6 * dep[j] - 0.4 * sfree[k] + b[j, 1] + cc[k] +
     (1.5 + 0.3 * dep[j] + 0.2 * sfree[k] + b[j, 2]) * ses + rnorm(N, 0, 1.2)
d <- data.frame(nbhd = sprintf("N%02d", j), school = k, ses = ses, dep = dep[j], sfree = sfree[k], y = round(y, 4))
write.csv(d, "hcm2/data/hcm2_sim.csv", row.names = FALSE)
d <- read.csv("hcm2/data/hcm2_sim.csv")

form <- y ~ (dep + sfree) * ses + (1 + ses | nbhd) + (1 | school)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
one <- function(reml) {
  f <- lmerTest::lmer(form, data = d, REML = reml, control = ctrl)
  vc <- as.data.frame(VarCorr(f))
  co <- summary(f)$coefficients
  list(
    method = if (reml) "REML" else "ML",
    fixed_effects = as.list(fixef(f)),
    se = as.list(sqrt(diag(as.matrix(vcov(f))))),
    vcov = unname(as.matrix(vcov(f))),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
                     var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    sigma = sigma(f), theta = unname(getME(f, "theta")),
    criterion = if (reml) REMLcrit(f) else deviance(f),
    logLik = as.numeric(logLik(f)), logLik_df = attr(logLik(f), "df"), AIC = AIC(f), BIC = BIC(f),
    ngrps = as.list(ngrps(f)),
    satterthwaite_df = as.list(setNames(co[, "df"], rownames(co))),
    optimizer = list(name = "bobyqa", rhoend = 1e-12, messages = I(as.character(f@optinfo$conv$lme4$messages)))
  )
}
out <- list(
  case = "hcm2_sim",
  description = "Simulated cross-classification: 1200 pupils, 40 neighbourhoods (rows, text ids) x 25 schools (columns); row predictor dep, column predictor sfree, ses slope random over neighbourhoods.",
  formula = deparse(form), data_file = "data/hcm2_sim.csv", n_obs = nrow(d),
  n_cells = nrow(unique(d[, c("nbhd", "school")])),
  software = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  lmerTest = as.character(packageVersion("lmerTest"))),
  REML = one(TRUE), ML = one(FALSE))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), "hcm2/hcm2_sim.json")
