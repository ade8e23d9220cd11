# The same steps as inference_time.py, in R (lme4 + lmerTest + pbkrtest + clubSandwich), for the
# ratio table. Called by inference_time.py when Rscript is installed; prints "step<TAB>seconds".
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(pbkrtest); library(clubSandwich)})
args <- commandArgs(trailingOnly = TRUE)
hsb <- read.csv(args[1], colClasses = c(school = "character"))
f <- mathach ~ (sector + meanses) * cses + (cses | school)
best <- function(expr, n = 3) {
  e <- substitute(expr)
  min(sapply(seq_len(n), function(i) system.time(eval(e, parent.frame(3)))[["elapsed"]]))
}
m <- lme4::lmer(f, hsb)
mt <- lmerTest::lmer(f, hsb)
mml <- lme4::lmer(f, hsb, REML = FALSE)
L <- rbind(c(0, 1, 0, 0, 0, 0), c(0, 0, 0, 0, 1, 0))
out <- c(
  "fit (REML)" = best(lme4::lmer(f, hsb)),
  "coef_table satterthwaite" = best(summary(lmerTest::as_lmerModLmerTest(m), ddf = "Satterthwaite")),
  "coef_table kenward-roger" = best(summary(mt, ddf = "Kenward-Roger")),
  "coef_table CR2 + Bell-McCaffrey" = best(coef_test(m, vcov = "CR2", test = "Satterthwaite")),
  "joint test HTZ (2 rows)" = best(Wald_test(m, constraints = L, vcov = "CR2", test = "HTZ")),
  "confint profile (ML fit)" = best(suppressWarnings(confint(mml, method = "profile")), 1),
  "bootstrap, 100 refits" = best(bootMer(m, fixef, nsim = 100, seed = 1), 1)
)
for (k in names(out)) cat(k, "\t", out[[k]], "\n", sep = "")
