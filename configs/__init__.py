"""Run configurations: one get_config() per file."""
