"""Option declarations every command shares, so each spells them the same way; groups of them
that several commands take together (``signer_options``, ``release_options``; reach.py: the registry's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .groups import option_group

if TYPE_CHECKING:
    from ..lists import Selection
    from ..model.oci import Platform

# Shared option declarations, so every command spells them the same way.
CaFileOption = typer.Option(None, "--ca-file", help="CA certificate (PEM) that signed the registry's certificate.")
InsecureOption = typer.Option(False, "--insecure", help="Use TLS but do not verify the registry's certificate.")
PlainHttpOption = typer.Option(False, "--plain-http", help="Talk plain HTTP to the registry (no TLS).")
UsernameOption = typer.Option(None, "--username", "-u", help="Registry user; password from --password-stdin.")
PasswordStdinOption = typer.Option(False, "--password-stdin", help="Read the registry password from standard input.")
JobsOption = typer.Option(16, "--jobs", "-j", min=1, max=64,
                          help="Concurrent transfers (to one registry at most 16 at first, 32 while it keeps "
                               "answering as fast).")
VerifyKeyOption = typer.Option(
    None, "--verify-key", metavar="COSIGN.PUB",
    help="Require each image to carry a cosign signature this PEM public key verifies (repeatable: any "
         "one key suffices); an image without one fails with exit 4. docs/signatures.md")
NoAttachmentsOption = typer.Option(
    False, "--no-attachments", help="Leave out the images' cosign signatures, attestations, SBOMs and OCI referrers.")
TrustedRootOption = typer.Option(
    None, "--trusted-root", metavar="TRUSTED_ROOT.JSON",
    help="Accept keyless cosign signatures whose Fulcio certificate and Rekor entry this Sigstore trusted "
         "root vouches for (with --certificate-identity and --certificate-oidc-issuer).")
CertificateIdentityOption = typer.Option(
    None, "--certificate-identity", help="Keyless: the signer's email or URI, as in its certificate.")
CertificateOidcIssuerOption = typer.Option(
    None, "--certificate-oidc-issuer", help="Keyless: the OIDC issuer that vouched for the signer.")
JsonOption = typer.Option(False, "--json", help="Print a machine-readable JSON report on stdout.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")
WaitForLimitOption = typer.Option(
    False, "--wait-for-limit",
    help="When a source's rate limit (Docker Hub's) is spent, wait for its window to reopen and finish in this run, "
         "instead of exiting 6 with the rest left for the next run.")
NoSpaceCheckOption = typer.Option(
    False, "--no-space-check", help="Start even when the free space looks too small for what this run writes.")

# What picks a topology's image list; `mirror pull` and `mirror lists` take the same options.
ModeOption = typer.Option(None, "--mode", help="Topology: k3s, rke, rke2 or docker (see `mirror lists`).")
K3sVersionOption = typer.Option(None, "--k3s-version")
KubernetesVersionOption = typer.Option(None, "--kubernetes-version", help="RKE system images version.")
Rke2VersionOption = typer.Option(None, "--rke2-version")
RancherVersionOption = typer.Option(None, "--rancher-version")
CertManagerVersionOption = typer.Option(None, "--cert-manager-version")
NoRegistryImageOption = typer.Option(False, "--no-registry-image", help="Leave out the bastion registry image.")
ImagesFileOption = typer.Option(None, "--images-file", "-f",
                                help="rancher-images.txt-style list (repeatable; added).")
ExcludeOption = typer.Option(None, "--exclude", help="Regex; matching references are dropped.")
DownstreamVersionsOption = typer.Option(
    None, "--downstream-versions",
    help="Of Rancher's per-Kubernetes-version images (system-agent-installer-*, k3s-upgrade, rke2-upgrade, ...), keep "
         "only these versions' and the local cluster's: v1.30, v1.30.4 or v1.30.4+k3s1 (comma-separated, repeatable).")
OfflineListsOption = typer.Option(
    False, "--offline-lists",
    help="Never fetch an image list: only built-in and cached ones (a version not built in is fetched "
         "from its release and cached otherwise).")

# Where source images are read from; `mirror pull` and `mirror sync run` take the same options.
PlatformOption = typer.Option(
    None, "--platform",
    help="Keep only these platforms, e.g. linux/amd64,linux/arm64 (an image pinned by @digest stays whole).")
SourceMirrorOption = typer.Option(
    None, "--source-mirror", help="REGISTRY=HOST[/PREFIX]: fetch that registry's images from a mirror.")
PlainHttpRegistryOption = typer.Option(
    None, "--plain-http-registry", help="HOST[:PORT] to reach over plain HTTP (repeatable).")
InsecureRegistryOption = typer.Option(
    None, "--insecure-registry", help="HOST[:PORT] whose TLS certificate is not verified (repeatable).")


@dataclass(frozen=True)
class Signers:
    """What may vouch for an image's signature, as given: --verify-key files, a keyless identity."""

    verify_key: list[Path] | None
    trusted_root: Path | None
    certificate_identity: str | None
    certificate_oidc_issuer: str | None

    def load(self, *, no_attachments: bool = False) -> list:
        """The verifiers, loaded (a UsageError names a file that is no public key or trusted root)."""
        from .flag_values import verifiers

        return verifiers(self.verify_key, self.trusted_root, self.certificate_identity, self.certificate_oidc_issuer,
                         no_attachments=no_attachments)


# pull, push, verify and sync: ``signers: Signers = ...``
signer_options = option_group("signers", {
    "verify_key": (Optional[list[Path]], VerifyKeyOption), "trusted_root": (Optional[Path], TrustedRootOption),
    "certificate_identity": (Optional[str], CertificateIdentityOption),
    "certificate_oidc_issuer": (Optional[str], CertificateOidcIssuerOption)}, Signers)


@dataclass(frozen=True)
class Release:
    """What picks a topology's image list: --mode and its components' versions, keyed as
    manifests/topologies.json names them."""

    mode: str | None
    versions: dict[str, str | None]


# pull, sync, lists and inventory: ``release: Release = ...``
release_options = option_group("release", {
    "mode": (Optional[str], ModeOption), "k3s_version": (Optional[str], K3sVersionOption),
    "kubernetes_version": (Optional[str], KubernetesVersionOption), "rke2_version": (Optional[str], Rke2VersionOption),
    "rancher_version": (Optional[str], RancherVersionOption),
    "cert_manager_version": (Optional[str], CertManagerVersionOption)},
    lambda mode, k3s_version, kubernetes_version, rke2_version, rancher_version, cert_manager_version: Release(
        mode, {"k3s": k3s_version, "kubernetes": kubernetes_version, "rke2": rke2_version, "rancher": rancher_version,
               "cert-manager": cert_manager_version}))


@dataclass(frozen=True)
class ImageChoice:
    """What picks the images besides --mode's list, as given: lists added, the registry image left out,
    regexes dropped, the downstream versions kept, whether lists may be fetched."""

    images_file: list[Path] | None
    no_registry_image: bool
    offline_lists: bool
    exclude: list[str] | None
    downstream_versions: list[str] | None

    def select(self, release: Release, platforms: list["Platform"], ca_file: Path | None,
               images: list[str] | None = None) -> "Selection":
        """The images (lists.select_from_releases), with ``images`` named one by one; its notes on stderr."""
        from ..lists import select_from_releases

        selection, notes = select_from_releases(
            release.mode, release.versions, images=images, images_file=self.images_file, exclude=self.exclude,
            no_registry_image=self.no_registry_image, platforms=platforms, offline_lists=self.offline_lists,
            ca_file=ca_file, downstream_versions=self.downstream_versions)
        for note in notes:
            typer.echo(note, err=True)
        return selection


# pull, sync run and lists: ``chosen: ImageChoice = ...``
image_options = option_group("chosen", {
    "images_file": (Optional[list[Path]], ImagesFileOption), "no_registry_image": (bool, NoRegistryImageOption),
    "offline_lists": (bool, OfflineListsOption), "exclude": (Optional[list[str]], ExcludeOption),
    "downstream_versions": (Optional[list[str]], DownstreamVersionsOption)}, ImageChoice)
