"""The Scrapy project that fills `posts` and `users`: spiders, the DuckDB pipeline, a runner."""
