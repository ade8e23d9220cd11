# A SAS data set for the reading tests (pyreadstat reads .sas7bdat but cannot write it):
# the HSB school table, written by haven. Run from this folder:  Rscript make_sas_fixture.R
suppressPackageStartupMessages(library(haven))
s <- read.csv("../../src/multilevel/datasets/data/hsb_schools.csv", colClasses = c(school = "character"))
write_sas(s, "hsb_schools.sas7bdat")
