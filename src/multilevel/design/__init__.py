"""Stage 4, design: the model's columns over the data, the internal coordinates, the one pass into summaries by term."""
