"""Files: model sources, safe unpickling, atomic writes, the ACM checkpoint."""
