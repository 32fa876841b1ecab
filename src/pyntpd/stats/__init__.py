"""Statistics files: ntpd's line formats and the file generations that hold them."""
