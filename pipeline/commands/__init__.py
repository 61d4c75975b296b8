"""One module per CLI command; importing a module registers its command on the app."""
