"""CLI sub-commands: argument parsing only; each calls into the package."""
