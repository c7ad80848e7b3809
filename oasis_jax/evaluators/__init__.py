"""Evaluators of generators, one metric per module: fid, miou, diversity."""
