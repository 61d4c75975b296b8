"""`semisam report` (placeholder)."""
