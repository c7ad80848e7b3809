"""The prepared format: resized pairs in checksummed ArrayRecord shards."""
