"""Lambda handlers: thin modules that parse events, call domain code and map errors to API.md's bodies."""
