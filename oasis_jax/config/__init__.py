"""The run config: defaults, workdir configs, 'auto', validation, resume."""
