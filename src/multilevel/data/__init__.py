"""Stage 3, data: reading files and tables, joining level files by id, checking values, weights; what is used and left out."""
