"""Placeholder entry point; replaced by the operator main module."""
