"""Data sets that ship with the package."""
from __future__ import annotations

from importlib import resources

import pandas as pd


def hsb() -> pd.DataFrame:
    """High School and Beyond: 7185 students in 160 schools (Raudenbush & Bryk 2002, ch. 4).

    A subsample of the 1982 High School and Beyond survey, as shipped with the HLM program
    (HSB1.sav, HSB2.sav) and used in the seminar and in Raudenbush & Bryk's book. One row per
    student, with the student's school's variables joined on `school`.

    Student (level 1):
      school   school id (string)
      minority 1 = student belongs to an ethnic minority, 0 = not
      female   1 = female, 0 = male
      ses      socio-economic status (standardised composite)
      mathach  mathematics achievement score (the outcome of the seminar's models)
      cses     ses centred at the school's sample mean of ses (ses - mean over the school's rows)
    School (level 2):
      size     school enrolment
      sector   1 = Catholic, 0 = public
      pracad   proportion of students in the academic track
      disclim  disciplinary climate scale
      himinty  1 = more than 40% minority enrolment, 0 = not
      meanses  the school's mean ses as given in the data set (HSB2's MEANSES; it differs from
               the sample mean of ses over the school's rows by about 0.006)
      n_students        number of students of the school in the file
      mean_ses_sample   the sample mean of ses over the school's rows (cses = ses - this)
    """
    base = resources.files(__package__) / "data"
    with resources.as_file(base / "hsb.csv") as p:
        students = pd.read_csv(p, dtype={"school": str})
    with resources.as_file(base / "hsb_schools.csv") as p:
        schools = pd.read_csv(p, dtype={"school": str})
    extra = schools[["school", "n_students", "mean_ses_sample"]]
    return students.merge(extra, on="school", how="left", validate="many_to_one")


__all__ = ["hsb"]
