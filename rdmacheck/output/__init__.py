"""Renderers for results: console table, JSON evidence, JUnit XML, HTML (report)."""
