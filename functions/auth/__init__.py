"""Auth: register, login, refresh-token rotation, logout and the caller's profile."""
