"""The options that pick pull's charts and files (mirror/kit), and the call that finds them upstream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..kit.plan import KitPlan
    from ..lists import Topology
    from ..model.oci import Platform

NoChartsOption = typer.Option(False, "--no-charts", help="Leave out --mode's Helm charts (Rancher, cert-manager) "
                                                        "and the cert-manager CRDs.")
NoFilesOption = typer.Option(False, "--no-files", help="Leave out --mode's distribution files (K3s/RKE2 binaries, "
                                                      "install.sh, checksums; RKE's rke).")
ChartOption = typer.Option(None, "--chart", help="Also carry this Helm chart: REPO_URL/NAME@VERSION (repeatable).")
FileOption = typer.Option(None, "--file", help="Also carry this file: URL[#sha256=HEX] (repeatable).")
RancherChartRepoOption = typer.Option(
    "stable", "--rancher-chart-repo", help="Where the Rancher chart comes from: stable, latest, prime or a URL.")
WithAirgapImagesOption = typer.Option(
    False, "--with-airgap-images", help="Also carry K3s's/RKE2's own air-gap image tarball (k3s-airgap-images-ARCH."
                                        "tar.zst, rke2-images.linux-ARCH.tar.zst).")
RkeVersionOption = typer.Option(
    None, "--rke-version", help="rke mode: carry the rke binary of this RKE release (e.g. v1.4.3), refused unless "
                                "it supports --kubernetes-version (docs/kit.md).")


def select_kit(topology: Topology | None, platforms: list[Platform], *, no_charts: bool, no_files: bool,
               charts: list[str] | None, files: list[str] | None, rancher_chart_repo: str,
               with_airgap_images: bool, offline_lists: bool, keep_going: bool,
               ca_file: Path | None, rke_version: str | None = None) -> KitPlan:
    """The charts and files a pull carries, each found upstream now (a missing one: exit 2 naming its URL)."""
    from ..kit.fetcher import KitFetcher
    from ..kit.plan import KitOptions, kit_arches, plan_kit

    options = KitOptions(charts=not no_charts, files=not no_files, rancher_chart_repo=rancher_chart_repo,
                         extra_charts=list(charts or []), extra_files=list(files or []),
                         with_airgap_images=with_airgap_images, offline_lists=offline_lists, keep_going=keep_going,
                         rke_version=rke_version)
    return plan_kit(topology.mode if topology else None, topology.versions if topology else {},
                    kit_arches(platforms), options, KitFetcher(ca_file))
