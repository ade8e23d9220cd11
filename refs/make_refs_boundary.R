# Reference numbers at the boundary of the parameter space (singular fits), where the
# parameterisation of the variance parameters matters for Satterthwaite's df.
# Data: a subset of HSB with many tiny schools, built here deterministically: schools in order of
# first appearance in hsb.csv; schools 1-30 keep their first row, 31-60 their first two rows,
# 61-80 all rows. Writes hsb/boundary.json.   Run from this folder:  Rscript make_refs_boundary.R
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(pbkrtest); library(clubSandwich); library(jsonlite)
})
hsb <- read.csv("../../shared/data/hsb.csv", colClasses = c(school = "character"))
schools <- unique(hsb$school)[1:80]
keep <- unlist(lapply(seq_along(schools), function(i) {
  rows <- which(hsb$school == schools[i])
  if (i <= 30) rows[1] else if (i <= 60) rows[1:2] else rows
}))
sub <- hsb[keep, ]
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
# The slope SD is estimated as exactly 0 (theta on its bound) by REML and by ML.
cases <- list(
  uncorrelated = list(formula = "mathach ~ ses * sector + (ses || school)", data = sub)
)
out <- list(description = "A singular fit on a subset of HSB with tiny schools (see the script's header).",
            n_rows = nrow(sub), cases = list())
for (nm in names(cases)) {
  cs <- cases[[nm]]
  for (reml in c(TRUE, FALSE)) {
    m <- eval(bquote(lmerTest::lmer(.(as.formula(cs$formula)), data = cs$data, REML = .(reml), control = ctrl)))
    meth <- if (reml) "REML" else "ML"
    s <- summary(m, ddf = "Satterthwaite")$coefficients
    vc <- as.data.frame(VarCorr(m))
    rec <- list(formula = cs$formula, method = meth, theta = unname(getME(m, "theta")),
                sigma2 = sigma(m)^2, fixef = unname(fixef(m)), names = names(fixef(m)),
                isSingular = isSingular(m), varcorr = vc[, c("grp", "var1", "var2", "vcov")],
                satterthwaite_df = unname(s[, "df"]), se = unname(s[, "Std. Error"]))
    if (reml) {
      k <- summary(m, ddf = "Kenward-Roger")$coefficients
      rec$kenward_roger_df <- unname(k[, "df"]); rec$kenward_roger_se <- unname(k[, "Std. Error"])
    }
    ct <- coef_test(m, vcov = "CR2", test = "Satterthwaite")
    rec$cr2_se <- unname(ct$SE); rec$cr2_df <- unname(ct$df_Satt)
    out$cases[[nm]][[meth]] <- rec
  }
}
out$software <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                     lmerTest = as.character(packageVersion("lmerTest")),
                     pbkrtest = as.character(packageVersion("pbkrtest")),
                     clubSandwich = as.character(packageVersion("clubSandwich")))
write_json(out, "hsb/boundary.json", auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null")
