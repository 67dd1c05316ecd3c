"""Option declarations every command shares, so each spells them the same way."""

from __future__ import annotations

import typer

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
# The registry a command reads or changes in place (inventory, prune): --registry, else the local one.
RegistryOption = typer.Option(
    None, "--registry", "-r",
    help="Registry HOST[:PORT][/PREFIX] [default: the registry `mirror registry up` started here].")
LocalRegistryOption = typer.Option(
    False, "--local-registry", help="The registry `mirror registry up` started here (the default).")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")
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
