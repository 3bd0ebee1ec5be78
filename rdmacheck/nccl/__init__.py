"""NCCL's own rules and formats: its list and parameter syntax (spec), its INFO log lines (log), the
nccl-tests bus-bandwidth factors (busbw) and the plateau figure read off a busbw sweep (plateau)."""
