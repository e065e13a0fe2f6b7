"""Markdown reports with PNG figures (matplotlib, headless)."""
