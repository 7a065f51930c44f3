"""Method-agnostic machinery shared by every method (imports errors and arch only)."""
