"""Worker-side search: matrices kept in step with PostgreSQL, exact k-NN kernels, list folds."""
