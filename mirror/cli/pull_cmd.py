"""``mirror pull``: the connected side's command."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import anyio
import typer

from ..errors import ExitCode, ImagesFailed, UsageError
from ..progress import Progress
from .app import app
from .common import (
    CaFileOption, CertManagerVersionOption, CertificateIdentityOption, CertificateOidcIssuerOption,
    DownstreamVersionsOption, ExcludeOption, ImagesFileOption, InsecureRegistryOption, JobsOption, JsonOption,
    K3sVersionOption, KubernetesVersionOption, ModeOption, NoAttachmentsOption, NoRegistryImageOption,
    OfflineListsOption, PlainHttpRegistryOption, PlatformOption, QuietOption, RancherVersionOption,
    Rke2VersionOption, SourceMirrorOption, TrustedRootOption, VerifyKeyOption, handle_errors, parse_platforms,
    select_images, source_access, topology_versions, verifiers,
)
from ..units import human_size, parse_size
from .render import emit_json, report_failures

if TYPE_CHECKING:
    from ..installer import PendingInstaller
    from ..model.reference import Reference
    from ..transfer.pull import PullRequest
    from ..transfer.budget import Budget
    from ..transfer.resolve import Resolution, ResolvedImage


@app.command("pull")
@handle_errors
def pull_command(
    images: Optional[list[str]] = typer.Argument(None, help="Image references (added to --mode's list)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Bundle to write, e.g. bundle.tar.zst."),
    images_file: Optional[list[Path]] = ImagesFileOption,
    mode: Optional[str] = ModeOption,
    k3s_version: Optional[str] = K3sVersionOption,
    kubernetes_version: Optional[str] = KubernetesVersionOption,
    rke2_version: Optional[str] = Rke2VersionOption,
    rancher_version: Optional[str] = RancherVersionOption,
    cert_manager_version: Optional[str] = CertManagerVersionOption,
    no_registry_image: bool = NoRegistryImageOption,
    offline_lists: bool = OfflineListsOption,
    exclude: Optional[list[str]] = ExcludeOption,
    downstream_versions: Optional[list[str]] = DownstreamVersionsOption,
    platform: Optional[list[str]] = PlatformOption,
    source_mirror: Optional[list[str]] = SourceMirrorOption,
    plain_http_registry: Optional[list[str]] = PlainHttpRegistryOption,
    insecure_registry: Optional[list[str]] = InsecureRegistryOption,
    ca_file: Optional[Path] = CaFileOption,
    jobs: int = JobsOption,
    work_dir: Optional[Path] = typer.Option(
        None, "--work-dir",
        help="Where blobs are fetched; a re-run resumes from it, and it is never deleted "
             "[default: .<output>.work beside the output, removed after a complete bundle]."),
    keep_work: bool = typer.Option(False, "--keep-work", help="Keep the default work dir after writing the bundle."),
    keep_going: bool = typer.Option(
        False, "--keep-going", help="Write a bundle of the images that worked (still exit 1 naming the rest)."),
    split_size: Optional[str] = typer.Option(
        None, "--split-size",
        help="Cut the bundle into parts of at most this size, e.g. 4G (capped at 4 GiB - 1, what FAT32 takes)."),
    level: int = typer.Option(
        1, "--level", min=1, max=19,
        help="zstd level. Layers are already gzip'd, so higher levels cost CPU for little; raise it for "
             "images with uncompressed layers."),
    base: Optional[list[Path]] = typer.Option(
        None, "--base",
        help="What the target already holds: an inventory (`mirror inventory`), a previous bundle or its "
             "mirror-bundle.json (repeatable; united). Writes a delta bundle leaving all of it out."),
    dry_run: bool = typer.Option(
        False, "--dry-run",
        help="Print the image list, the download size and, for a registry with a rate limit, the pulls it costs "
             "against what is left; fetch no blob."),
    wait_for_limit: bool = typer.Option(
        False, "--wait-for-limit",
        help="When a source's rate limit (Docker Hub's) is spent, wait for its window to reopen and finish in "
             "this run, instead of exiting 6 with the rest left for the next run."),
    force: bool = typer.Option(False, "--force", help="Replace a bundle already at -o."),
    with_installer: bool = typer.Option(
        False, "--with-installer",
        help="Also write mirror's offline installer beside the bundle (NAME.mirror-installer.tar.gz and its "
             ".sha256), made before any image is fetched."),
    no_attachments: bool = NoAttachmentsOption,
    verify_key: Optional[list[Path]] = VerifyKeyOption,
    trusted_root: Optional[Path] = TrustedRootOption,
    certificate_identity: Optional[str] = CertificateIdentityOption,
    certificate_oidc_issuer: Optional[str] = CertificateOidcIssuerOption,
    json_report: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Pull images into ONE portable bundle (an OCI image layout in a tar.zst)."""
    from ..transfer.delta import load_base  # imported here so other commands start faster
    from ..transfer.pull import PullRequest, pull

    platforms = parse_platforms(platform or [])
    selection = select_images(
        mode, topology_versions(k3s_version, kubernetes_version, rke2_version, rancher_version, cert_manager_version),
        images=images, images_file=images_file, exclude=exclude, no_registry_image=no_registry_image,
        platforms=platforms, offline_lists=offline_lists, ca_file=ca_file, downstream_versions=downstream_versions)
    refs, topology = selection.images, selection.topology
    if not refs:
        raise UsageError("no images to pull: name images, --images-file or --mode")
    if output is None and not dry_run:
        raise UsageError("--output/-o is required (the bundle to write, e.g. bundle.tar.zst)")
    if output is not None and not dry_run:
        _check_output(output, force)
    sources, settings_for = source_access(source_mirror or [], plain_http_registry or [], insecure_registry or [],
                                          ca_file, jobs)
    request = PullRequest(
        images=refs,
        output=(output or Path("bundle.tar.zst")).absolute(),
        sources=sources,
        settings_for=settings_for,
        platforms=platforms,
        jobs=jobs,
        work_dir=work_dir,
        keep_going=keep_going,
        keep_work=keep_work,
        topology=asdict(topology) if topology else None,
        compression_level=level,
        part_size=parse_size(split_size, "--split-size") if split_size else None,
        base=load_base(base) if base else None,
        attachments=not no_attachments,
        verify_keys=verifiers(verify_key, trusted_root, certificate_identity, certificate_oidc_issuer,
                              no_attachments=no_attachments),
        wait_for_limit=wait_for_limit,
        log=lambda line: typer.echo(f"mirror: {line}", err=True),
    )
    progress = Progress(quiet or json_report)
    if dry_run:
        _dry_run(request, progress, json_report, selection.trimmed if downstream_versions is not None else None)
        return
    installer = _build_installer(request.output, quiet or json_report) if with_installer else None
    try:
        result = anyio.run(pull, request, progress)
        made = installer.publish() if installer and result.bundle else None
    except ImagesFailed as failed:
        if json_report:  # a script still gets its report: no bundle, and why
            emit_json({"bundle": None, "failures": failed.failures, "exit_code": int(failed.exit_code)})
        raise
    finally:
        if installer:
            installer.discard()
    if json_report:
        emit_json({**result.to_json(), **({"installer": {"path": str(made.path), "sha256": made.sha256}}
                                          if made else {})})
    elif result.bundle:
        typer.echo(f"wrote {result.kind} bundle {result.bundle.path} ({human_size(result.bundle.size)}, "
                   f"{sum(not r.is_attachment for r in result.images)} images"
                   f"{_attachments(result.images)}, {human_size(result.total_blob_bytes)} of content; "
                   f"downloaded {human_size(result.downloaded_bytes)}, reused {human_size(result.reused_bytes)})")
        for part in result.bundle.parts if len(result.bundle.parts) > 1 else []:
            typer.echo(f"  part {part}")
        if made:
            typer.echo(f"wrote offline installer {made.describe()}")
    if result.failures:
        report_failures(result.failures)
    if result.deferral:
        typer.echo(f"mirror: deferred: {result.deferral}", err=True)
    if result.failures or result.deferred:
        raise typer.Exit(int(result.exit_code))


def _attachments(records: list) -> str:
    count = sum(record.is_attachment for record in records)
    return f" with {count} signatures, attestations, SBOMs and referrers" if count else ""


def _build_installer(output: Path, quiet: bool) -> PendingInstaller:
    """mirror's offline installer for beside ``output``, built before anything is fetched."""
    from ..installer import PendingInstaller, installer_beside

    def log(line: str) -> None:
        if not quiet:
            typer.echo(f"mirror: offline installer: {line}", err=True)

    return PendingInstaller(installer_beside(output), log=log)


def _check_output(output: Path, force: bool) -> None:
    """Refuse, before anything is fetched, an -o that is a directory or (without --force) a bundle."""
    from ..bundle.parts import stray_parts

    if output.is_dir():
        raise UsageError(f"-o {output}: is a directory; name the bundle file to write, e.g. {output}/bundle.tar.zst")
    if not force and (output.exists() or stray_parts(output, 0)):
        raise UsageError(f"-o {output}: a bundle is already there; pass --force to replace it")


def _dry_run(request: PullRequest, progress: Progress, json_report: bool, trimmed: list[Reference] | None) -> None:
    """Resolve manifests only: the list, and the unique download size where sources answer.

    With --downstream-versions (``trimmed``: what it left out) those images are resolved too, manifests only,
    to say how many bytes the trim saves: one more manifest request per image (more for an index), which the
    summary says. Their failures are counted, never the run's.

    A source with a rate limit (Docker Hub's) is read first with a free HEAD; resolving spends its pulls
    (a manifest GET each), never past what is left, the pull's images before the trimmed ones, and a line
    per such source sets the pull's cost against the budget.
    """
    from ..registry.pool import ClientPool
    from ..transfer.budget import Budget
    from ..transfer.pull import resolver

    weighed = trimmed or []

    async def resolve():
        async with ClientPool(request.settings_for) as pool:
            budget = Budget(pool)
            await budget.survey(request.sources, request.images)
            resolve_all = resolver(request, pool, store=None, budget=budget).resolve_all
            pulled = await resolve_all(request.images, progress)
            costs = _costs(request, pulled, budget)  # before weighing spends more
            return pulled.joined(await resolve_all(weighed, progress)) if weighed else pulled, costs

    resolution, costs = anyio.run(resolve)
    left_out = {str(ref) for ref in weighed}
    failures = {ref: why for ref, why in resolution.failures.items() if ref not in left_out}
    unique = _contents(image for image in resolution.images if str(image.ref) not in left_out)
    base = request.base.digests if request.base else set()
    shipped = {digest: size for digest, size in unique.items() if digest not in base}
    saved = {digest: size for digest, size in _contents(i for i in resolution.images if str(i.ref) in left_out).items()
             if digest not in unique and digest not in base}
    unmeasured = sum(1 for ref in left_out if ref in resolution.failures or ref in resolution.deferred)
    if json_report:
        report = {"images": [str(r) for r in request.images], "download_bytes": sum(shipped.values()),
                  "unresolved": failures}
        if request.base:
            report.update(base=request.base.ids, shipped_blobs=len(shipped), omitted_blobs=len(unique) - len(shipped),
                          omitted_bytes=sum(unique.values()) - sum(shipped.values()))
        if trimmed is not None:
            report.update(trimmed={"images": len(weighed), "bytes": sum(saved.values()), "unresolved": unmeasured})
        if costs:
            report.update(ratelimits=costs)
        emit_json(report)
    else:
        for ref in request.images:
            typer.echo(str(ref))
        summary = f"{len(request.images)} images, {human_size(sum(shipped.values()))} to download"
        if request.base:
            summary += (f" and ship ({len(shipped)} blob(s); {len(unique) - len(shipped)} blob(s), "
                        f"{human_size(sum(unique.values()) - sum(shipped.values()))} left to the base)")
        summary += f" ({len(failures)} could not be resolved)" if failures else ""
        over = sum(cost["unresolved"] for cost in costs.values())
        summary += f" (at least: {over} not resolved within a rate limit)" if over else ""
        if trimmed is not None:
            summary += (f"; --downstream-versions left out {len(weighed)} images, "
                        f"{'at least ' if unmeasured else ''}{human_size(sum(saved.values()))} (weighed by "
                        f"resolving their manifests too: {len(weighed)} or more extra manifest requests"
                        f"{f'; {unmeasured} could not be resolved' if unmeasured else ''})")
        typer.echo(summary, err=True)
        for host, cost in costs.items():
            typer.echo(f"mirror: {_cost_line(host, cost)}", err=True)
    if failures:
        report_failures(failures)
        raise typer.Exit(int(ExitCode.FAILED))


def _costs(request: PullRequest, resolution: Resolution, budget: Budget) -> dict[str, dict[str, Any]]:
    """Per source with a rate limit, once the pull's images are resolved: what was left, what resolving
    them cost (a dry run has no work dir: every manifest is a GET, a pull) and how many did not fit."""
    costs: dict[str, dict[str, Any]] = {}
    for host, allowance in sorted(budget.allowances.items()):
        costs[host] = {**allowance.to_json(), "left": allowance.left,
                       "unresolved": sum(1 for ref in request.images if str(ref) in resolution.deferred
                                         and request.sources.locate(ref).host == host)}
    return costs


def _cost_line(host: str, cost: dict[str, Any]) -> str:
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
