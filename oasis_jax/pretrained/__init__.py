"""Weight files: one reader with one pinned-file check, and the converters of published weights."""
