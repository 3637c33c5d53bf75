"""The demo site's package: a visit counter in sqlite3 and four apps that use it."""
