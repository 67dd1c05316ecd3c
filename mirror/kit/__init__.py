"""The rest of a Rancher air-gap kit: Helm charts and distribution files, carried as OCI artifacts.

items.py (what a kit holds) <- plan.py (which items a mode needs, from the
official hosts in hosts.py, checked against helm_index.py / checksums.py)
-> download.py (into pull's work dir, each hashed) -> artifact.py (an OCI
artifact per item, beside the images) -> extract.py / install.py on the bastion.
"""
