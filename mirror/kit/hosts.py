"""Where kit items come from, and the environment variables that replace each host (tests, proxies).

``MIRROR_RELEASES_URL`` (GitHub releases) is the image lists' own
(release_lists.releases_url); ``MIRROR_RANCHER_CHARTS_URL`` replaces the
Rancher chart repository of whichever channel is chosen (not a URL given
as the channel), ``MIRROR_JETSTACK_CHARTS_URL`` Jetstack's,
``MIRROR_RAW_URL`` https://raw.githubusercontent.com.
"""

from __future__ import annotations

import os

from ..errors import UsageError

RANCHER_CHANNELS = {
    "stable": "https://releases.rancher.com/server-charts/stable",
    "latest": "https://releases.rancher.com/server-charts/latest",
    "prime": "https://charts.rancher.com/server-charts/prime",
}
JETSTACK_CHARTS = "https://charts.jetstack.io"
RAW = "https://raw.githubusercontent.com"


def rancher_charts_url(channel: str) -> str:
    """The chart repository of ``--rancher-chart-repo``: a channel name or a repository URL."""
    if channel in RANCHER_CHANNELS:
        return os.environ.get("MIRROR_RANCHER_CHARTS_URL", RANCHER_CHANNELS[channel]).rstrip("/")
    if channel.startswith(("https://", "http://")):
        return channel.rstrip("/")
    raise UsageError(f"--rancher-chart-repo {channel!r}: expected {', '.join(RANCHER_CHANNELS)} or a repository URL")


def jetstack_charts_url() -> str:
    return os.environ.get("MIRROR_JETSTACK_CHARTS_URL", JETSTACK_CHARTS).rstrip("/")


def raw_url() -> str:
    return os.environ.get("MIRROR_RAW_URL", RAW).rstrip("/")
