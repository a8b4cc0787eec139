"""One spider per platform; each crawls the accounts of one source from sources.yaml."""
