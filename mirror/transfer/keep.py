"""``mirror prune --keep FILE``: the kept set that bundles, inventories and sync.yaml files name, united.

A bundle (or its ``mirror-bundle.json``) and an inventory name images by
source reference, read as ``pull --base`` reads them (a delta bundle names
every image of its run, its base's included). A ``*.yaml``/``*.yml`` file is a
sync config, checked as ``sync run`` checks it but with no password read:
its ``image:`` entries name images, its ``mode:`` and ``images_files:``
entries the images of their lists (resolved as ``sync run`` resolves them:
built in, cached, or fetched unless ``offline_lists``), its ``repository:``
entries keep the tags their rules (allow, deny, semver, keep_latest) choose
among the tags the target holds; the target's, since the disconnected side
cannot ask upstream.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..model.reference import Reference
from .delta import load_base
from .prune import KeptSet
from .sync_config import load_config

CONFIG_SUFFIXES = (".yaml", ".yml")


def load_kept(paths: list[Path]) -> KeptSet:
    """The union of every FILE; one that is unreadable or none of the three is a UsageError naming it."""
    kept = KeptSet()
    for path in paths:
        if path.suffix.lower() in CONFIG_SUFFIXES:
            if not path.is_file():
                raise UsageError(f"--keep {path}: no such file")
            request = load_config(path, secrets=False, lists=True).request
            kept.references.update(image.ref for image in request.images)
            kept.selections.extend(request.selections)
        else:
            kept.references.update(Reference.parse(source) for source in load_base([path], "--keep").images)
    return kept
