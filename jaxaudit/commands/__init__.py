"""One module per CLI command; only the chosen command's flags are defined."""
