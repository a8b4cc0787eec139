"""Scrapy settings of the Tribes crawler: polite by default.

`scrapers.run` (what `tribes crawl` starts) overrides USER_AGENT, DOWNLOAD_DELAY (and
AUTOTHROTTLE_START_DELAY, twice it), CONCURRENT_REQUESTS_PER_DOMAIN, RETRY_TIMES and the TRIBES_*
values from the typed Tribes settings (`pipeline/settings.py`: defaults < tribes.toml < TRIBES_*
environment)."""

from pipeline.settings import Settings

BOT_NAME = "tribes"
SPIDER_MODULES = ["scrapers.spiders"]
NEWSPIDER_MODULE = "scrapers.spiders"

# politeness
USER_AGENT = "TribesBot/0.1 (research crawler)"  # scrapers.run adds the `contact` setting
ROBOTSTXT_OBEY = True
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 2.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_DELAY = 1.0  # the least gap between requests to a host, across all sources
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_TIMEOUT = 30
COOKIES_ENABLED = False
# no doors into the crawler: Scrapy's telnet console, and its remote control (on by default
# since Scrapy 2.19: a localhost HTTP server that runs Python code sent to it, its token in a
# job file under the user's state folder, left there when a crawl is killed)
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

# retries: 429 waits for Retry-After, 5xx and network errors back off exponentially
RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
TRIBES_RETRY_BACKOFF = 2.0  # seconds before the first retry, doubled each time
TRIBES_RETRY_BACKOFF_MAX = 120.0
TRIBES_RETRY_AFTER_MAX = 900.0  # a longer Retry-After gives the account up for this crawl

# safety: only http(s), only the configured hosts (every request, redirects included: the
# middleware runs first), no other URL scheme can even be downloaded
DOWNLOADER_MIDDLEWARES = {
    "scrapers.middlewares.SafeTargetsMiddleware": 10,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "scrapers.middlewares.PoliteRetryMiddleware": 550,
}
# politeness across sources: one pace per host for the whole crawl (scrapers/pacing.py)
DOWNLOAD_HANDLERS = {
    "http": "scrapers.pacing.PacedDownloadHandler",
    "https": "scrapers.pacing.PacedDownloadHandler",
    "file": None,
    "data": None,
    "ftp": None,
    "s3": None,
}
SPIDER_MIDDLEWARES = {"scrapers.middlewares.AccountErrorsMiddleware": 50}
ITEM_PIPELINES = {"scrapers.pipelines.DuckDBPipeline": 300}

# storage (scrapers.pipelines.DuckDBPipeline)
TRIBES_DB = ".tribes/tribes.duckdb"
TRIBES_BATCH_SIZE = 1000  # posts per transaction: a kill -9 loses at most this many...
TRIBES_FLUSH_SECONDS = 30.0  # ...or this many seconds of crawling (the next crawl refetches them)
# wait this long for another writer: lock_wait_seconds (scrapers.run passes the setting)
TRIBES_DB_WAIT_SECONDS = Settings.model_fields["lock_wait_seconds"].default
TRIBES_DB_HOLD_SECONDS = 30.0  # keep the database to ourselves at most this long at a stretch
TRIBES_DB_IDLE_SECONDS = 5.0  # and close it after this long without a batch
TRIBES_MAX_POST_CHARS = 20_000

DEFAULT_DROPITEM_LOG_LEVEL = "INFO"
LOG_LEVEL = "INFO"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
