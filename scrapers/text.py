"""Small text helpers shared by the spiders: HTML to plain text, timestamps to naive UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import lxml.html
from dateutil import parser as dateparser

BLOCKS = {
    "p",
    "div",
    "li",
    "blockquote",
    "pre",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "article",
    "section",
    "header",
    "footer",
    "ul",
    "ol",
    "table",
}


def html_to_text(html: str | None) -> str:
    """Plain text of an HTML fragment: `<br>` and block ends become newlines, entities decoded."""
    if not html or not html.strip():
        return ""
    if "<" not in html and "&" not in html:
        return html.strip()
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    for element in root.iter():
        if not isinstance(element.tag, str):  # comments, processing instructions
            continue
        if element.tag in ("script", "style"):
            element.drop_tree()
        elif element.tag == "br":
            element.tail = "\n" + (element.tail or "")
        elif element.tag in BLOCKS and element is not root:
            element.tail = "\n\n" + (element.tail or "")
    text = root.text_content().replace("\r\n", "\n").replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def to_utc(value: datetime) -> datetime:
    """A naive UTC datetime (naive inputs are taken as UTC already)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def parse_time(value: str | None) -> datetime | None:
    """ISO 8601, RFC 822 or any common date string as naive UTC; None when unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        return to_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        pass
    try:
        return to_utc(parsedate_to_datetime(text))
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return to_utc(dateparser.parse(text))
    except (ValueError, OverflowError):
        return None


def iso_z(value: datetime) -> str:
    """A naive UTC datetime as `2024-01-02T03:04:05.000Z` (the APIs' format)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
