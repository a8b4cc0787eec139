"""The platforms Tribes crawls: one spider each in scrapers/spiders/, whose `name` is the platform
(the `platform` of sources.yaml and of stored posts), found by Scrapy's spider loader."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from scrapy.settings import Settings
from scrapy.spiderloader import SpiderLoader

if TYPE_CHECKING:
    from scrapers.spiders.base import AccountSpider


def project_settings() -> Settings:
    """The Scrapy settings of this project (scrapers/settings.py), wherever Tribes runs from."""
    settings = Settings()
    settings.setmodule("scrapers.settings", priority="project")
    return settings


@cache
def spider_loader() -> SpiderLoader:
    return SpiderLoader.from_settings(project_settings())


def platforms() -> list[str]:
    """Every platform there is a spider for, sorted."""
    return sorted(spider_loader().list())


def platform_spider(platform: str) -> type[AccountSpider]:
    """The spider of `platform`; ValueError naming the platforms there are."""
    try:
        return spider_loader().load(platform)
    except KeyError:
        known = ", ".join(platforms())
        raise ValueError(f"no spider crawls platform {platform!r} (platforms: {known})") from None
