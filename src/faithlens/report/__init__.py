"""Plots and reports. Only this package and the CLI draw."""
