"""The clock core, pure: time is passed in, decisions come out (no sockets, files or clocks)."""
