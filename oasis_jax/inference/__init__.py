"""Inference with a trained generator: the Synthesizer, the noise scheme, the export format."""
