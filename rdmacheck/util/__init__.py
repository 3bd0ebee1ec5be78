"""Small helpers every layer uses: errors, units, bounded input files, atomic output files, output-path
checks, console sanitising, crash reports."""
