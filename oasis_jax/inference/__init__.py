"""Inference: the Synthesizer, the noise scheme, the export format."""
