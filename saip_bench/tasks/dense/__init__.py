"""Shared parts of the dense tasks (pose, whole-body, parsing): features, heads, top-down crops, drawing."""
