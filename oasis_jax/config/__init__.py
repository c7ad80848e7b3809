"""The run config: defaults read onto workdirs, 'auto' resolved once, validation, resume compatibility."""
