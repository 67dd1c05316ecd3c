"""-j raises how many transfers run at once, never the connections to one registry: flags and configs alike."""

from mirror.cli.flag_values import registry_settings
from mirror.registry.settings import MAX_CONNECTIONS_PER_REGISTRY
from mirror.transfer.sync_config import load_config


def test_a_config_job_caps_connections_per_registry_as_flags_do(tmp_path):
    config = tmp_path / "sync.yaml"
    config.write_text("target: {registry: reg.dmz.corp:5000}\nsources:\n  - {registry: quay.io}\n"
                      "images:\n  - image: docker.io/rancher/fleet:v1\n")
    job = load_config(config, jobs=64)
    assert job.request.target.settings.max_connections == MAX_CONNECTIONS_PER_REGISTRY
    for host in ("quay.io", "registry-1.docker.io"):
        assert job.request.settings_for(host).max_connections == MAX_CONNECTIONS_PER_REGISTRY
    assert registry_settings(jobs=64).max_connections == MAX_CONNECTIONS_PER_REGISTRY
    assert load_config(config, jobs=4).request.target.settings.max_connections == 4
