"""Small, contained work-arounds for the installed stack (see each module's docstring)."""
