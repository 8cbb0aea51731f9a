"""File-format readers behind the `read` stage: sniffing, archives, text and books."""
