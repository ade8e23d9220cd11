# lme4 reference for text columns that look like numbers (issue 11, item 5): R's ChickWeight with
# Diet written as the text "1".."4" is a factor, and `weight ~ Time * Diet + (1 | Chick)` has 8
# fixed effects. Writes the data (Diet and Chick as text) and lmer's REML estimates.
# Run: Rscript refs/make_refs_text_factors.R   (from the repository root)
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
d <- data.frame(weight = ChickWeight$weight, Time = ChickWeight$Time,
                Chick = as.character(ChickWeight$Chick), Diet = as.character(ChickWeight$Diet))
m <- lmer(weight ~ Time * Diet + (1 | Chick), data = d, REML = TRUE,
          control = lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
vc <- as.data.frame(VarCorr(m))
out <- list(
  formula = "weight ~ Time * Diet + (1 | Chick)",
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  data = d,
  beta = as.list(fixef(m)),
  tau00 = vc$vcov[1], sigma2 = sigma(m)^2, reml_criterion = as.numeric(REMLcrit(m))
)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = FALSE), "refs/factors/chickweight_diet.json")
