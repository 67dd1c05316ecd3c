"""``mirror pull --dry-run``: manifests resolved, no blob fetched; what a pull would ship and what it costs.

With --downstream-versions (``trimmed``: what it left out) those images are
resolved too, manifests only, to say how many bytes the trim saves: one more
manifest request per image (more for an index), which the summary says. Their
failures are counted, never the run's.

A source with a rate limit (Docker Hub's) is read first with a free HEAD;
resolving spends its pulls (a manifest GET each), never past what is left, the
pull's images before the trimmed ones, and a line per such source sets the
pull's cost against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..model.reference import Reference
from ..progress import Progress
from ..registry.pool import ClientPool
from ..units import human_size
from .budget import Budget
from .pull import PullRequest, resolver
from .resolve import Resolution, ResolvedImage


@dataclass
class DryRun:
    request: PullRequest
    unique: dict[str, int]  # digest -> size of every blob and manifest the pull's images need
    shipped: dict[str, int]  # of those, what the base does not hold
    failures: dict[str, str]  # image -> why it could not be resolved
    trimmed: list[Reference] | None  # what --downstream-versions left out; None without it
    saved: dict[str, int] = field(default_factory=dict)  # what the trimmed images alone would have added
    unmeasured: int = 0  # trimmed images that could not be resolved (their bytes are not counted)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # rate-limited source -> its cost

    @property
    def kit(self) -> dict[str, list[dict[str, str]]]:
        return {kind: [{"name": item.name, "version": item.version, "url": item.url} for item in self.request.kit
                       if item.kind == kind] for kind in ("chart", "file")}

    def to_json(self) -> dict[str, Any]:
        request, kit = self.request, self.kit
        report = {"images": [str(r) for r in request.images], "download_bytes": sum(self.shipped.values()),
                  "unresolved": self.failures, "charts": kit["chart"], "files": kit["file"]}
        if request.base:
            report.update(base=request.base.ids, shipped_blobs=len(self.shipped),
                          omitted_blobs=len(self.unique) - len(self.shipped),
                          omitted_bytes=sum(self.unique.values()) - sum(self.shipped.values()))
        if self.trimmed is not None:
            report.update(trimmed={"images": len(self.trimmed), "bytes": sum(self.saved.values()),
                                   "unresolved": self.unmeasured})
        if self.costs:
            report.update(ratelimits=self.costs)
        return report

    def listing(self) -> list[str]:
        """The images, then the kit's items (found upstream already; their sizes are known once downloaded)."""
        return [str(ref) for ref in self.request.images] + [
            f"{item.kind} {item.name} {item.version} {item.url}" for item in self.request.kit]

    def summary(self) -> str:
        """One line: images, bytes to download (and ship), what could not be resolved, what the trim saved."""
        request, kit = self.request, self.kit
        summary = f"{len(request.images)} images, {human_size(sum(self.shipped.values()))} to download"
        if request.kit:
            summary += f" (and {len(kit['chart'])} chart(s), {len(kit['file'])} file(s))"
        if request.base:
            left = sum(self.unique.values()) - sum(self.shipped.values())
            summary += (f" and ship ({len(self.shipped)} blob(s); {len(self.unique) - len(self.shipped)} blob(s), "
                        f"{human_size(left)} left to the base)")
        summary += f" ({len(self.failures)} could not be resolved)" if self.failures else ""
        over = sum(cost["unresolved"] for cost in self.costs.values())
        summary += f" (at least: {over} not resolved within a rate limit)" if over else ""
        if self.trimmed is not None:
            summary += (f"; --downstream-versions left out {len(self.trimmed)} images, "
                        f"{'at least ' if self.unmeasured else ''}{human_size(sum(self.saved.values()))} (weighed "
                        f"by resolving their manifests too: {len(self.trimmed)} or more extra manifest requests"
                        f"{f'; {self.unmeasured} could not be resolved' if self.unmeasured else ''})")
        return summary

    def cost_lines(self) -> list[str]:
        return [cost_line(host, cost) for host, cost in self.costs.items()]


async def dry_run(request: PullRequest, progress: Progress, trimmed: list[Reference] | None) -> DryRun:
    weighed = trimmed or []
    async with ClientPool(request.settings_for, request.http_transport) as pool:
        budget = Budget(pool)
        await budget.survey(request.sources, request.images)
        resolve_all = resolver(request, pool, store=None, budget=budget).resolve_all
        pulled = await resolve_all(request.images, progress)
        costs = _costs(request, pulled, budget)  # before weighing spends more
        resolution = pulled.joined(await resolve_all(weighed, progress)) if weighed else pulled
    left_out = {str(ref) for ref in weighed}
    unique = _contents(image for image in resolution.images if str(image.ref) not in left_out)
    base = request.base.digests if request.base else set()
    trimmed_contents = _contents(image for image in resolution.images if str(image.ref) in left_out)
    return DryRun(
        request, unique,
        shipped={digest: size for digest, size in unique.items() if digest not in base},
        failures={ref: why for ref, why in resolution.failures.items() if ref not in left_out},
        trimmed=trimmed,
        saved={digest: size for digest, size in trimmed_contents.items() if digest not in unique and digest not in base},
        unmeasured=sum(1 for ref in left_out if ref in resolution.failures or ref in resolution.deferred),
        costs=costs,
    )


def _costs(request: PullRequest, resolution: Resolution, budget: Budget) -> dict[str, dict[str, Any]]:
    """Per source with a rate limit, once the pull's images are resolved: what was left, what resolving
    them cost (a dry run has no work dir: every manifest is a GET, a pull) and how many did not fit."""
    costs: dict[str, dict[str, Any]] = {}
    for host, allowance in sorted(budget.allowances.items()):
        costs[host] = {**allowance.to_json(), "left": allowance.left,
                       "unresolved": sum(1 for ref in request.images if str(ref) in resolution.deferred
                                         and request.sources.locate(ref).host == host)}
    return costs


def cost_line(host: str, cost: dict[str, Any]) -> str:
    """``HOST: this pull costs N pulls ...; R of L per W s were left ...; a pull fits`` (or what to do)."""
    line = f"{host}: this pull costs {cost['spent']} pulls of its rate limit (a manifest GET each; HEADs are free)"
    if cost["unresolved"]:
        line += f", and at least {cost['unresolved']} more for the images not resolved within it"
    limit = f" of {cost['limit']}" if cost["limit"] is not None else ""
    window = f" per {cost['window']} s" if cost["window"] else ""
    line += f"; {cost['remaining']}{limit}{window} were left, {cost['left']} once this dry run resolved them"
    if not cost["unresolved"] and cost["left"] is not None and cost["spent"] <= cost["left"]:
        return line + "; a pull fits"
    return (line + "; a pull fetches what fits and defers the rest (exit 6), or waits for the window with "
            "--wait-for-limit (docs/rate-limits.md)")


def _contents(images: Iterable[ResolvedImage]) -> dict[str, int]:
    """digest -> size of every blob and manifest of ``images``, each once."""
    unique: dict[str, int] = {}
    for image in images:
        unique.update(image.blobs)
        unique.update({m.digest: len(m.data) for m in image.manifests})
    return unique
