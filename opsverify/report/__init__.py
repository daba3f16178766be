"""Report writers: the machine-readable summary and the HTML header, free of pytest."""
