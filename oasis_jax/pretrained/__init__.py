"""Weight files: one reader, one pinned-file check, the converters."""
