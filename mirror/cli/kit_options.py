"""The options that pick the charts and files pull and sync carry (mirror/kit), declared once, and the call
that finds them upstream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .groups import option_group

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


@dataclass(frozen=True)
class KitChoice:
    """The kit options as given; ``select`` finds the charts and files they name upstream."""

    no_charts: bool
    no_files: bool
    chart: list[str] | None
    file: list[str] | None
    rancher_chart_repo: str
    with_airgap_images: bool
    rke_version: str | None

    def select(self, topology: Topology | None, platforms: list[Platform], *, offline_lists: bool,
               keep_going: bool, ca_file: Path | None) -> KitPlan:
        """The charts and files a run carries, each found upstream now (a missing one: exit 2 naming its URL)."""
        from ..kit.fetcher import KitFetcher
        from ..kit.plan import KitOptions, kit_arches, plan_kit

        options = KitOptions(charts=not self.no_charts, files=not self.no_files,
                             rancher_chart_repo=self.rancher_chart_repo, extra_charts=list(self.chart or []),
                             extra_files=list(self.file or []), with_airgap_images=self.with_airgap_images,
                             offline_lists=offline_lists, keep_going=keep_going, rke_version=self.rke_version)
        return plan_kit(topology.mode if topology else None, topology.versions if topology else {},
                        kit_arches(platforms), options, KitFetcher(ca_file))


# pull and sync run: ``kit_choice: KitChoice = ...``
kit_options = option_group("kit_choice", {
    "no_charts": (bool, NoChartsOption), "no_files": (bool, NoFilesOption),
    "chart": (Optional[list[str]], ChartOption), "file": (Optional[list[str]], FileOption),
    "rancher_chart_repo": (str, RancherChartRepoOption), "with_airgap_images": (bool, WithAirgapImagesOption),
    "rke_version": (Optional[str], RkeVersionOption)}, KitChoice)
