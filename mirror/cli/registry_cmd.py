"""``mirror registry up|down|status``: a registry on the bastion in one command.

Exit codes: 0 done; 2 the request or the host is not fit (port taken, data
dir not writable or too small for the --from-bundle bundle, Docker Engine
refused, no registry image in the bundle, bad flags) and nothing was
started; 1 the registry started but did not answer (it was stopped again);
``status`` exits 1 when no registry runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from ..errors import UsageError
from .app import app
from .common import handle_errors
from .options import JsonOption
from .render import emit_json

if TYPE_CHECKING:
    from ..server.lifecycle import UpResult

registry_app = typer.Typer(
    help="Run a TLS registry with auth on this host (Docker Engine or the registry binary).",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")

StateDirOption = typer.Option(
    None, "--state-dir", envvar="MIRROR_STATE_DIR",
    help="Where up records URL, CA and credentials for push/config "
         "[default: /var/lib/mirror/registry as root, else ~/.local/share/mirror/registry].")

LOOPBACK = ("localhost", "127.0.0.1", "::1")
EXIT_CODES = ("Exit codes: 0 running; 2 bad flags or unfit host (port in use, data dir not writable, "
              "Docker Engine refused, no registry image in the bundle, another up or down at work, "
              "a flag changing what nodes use without --reconfigure, a data dir too small for the "
              "--from-bundle bundle) and nothing started; "
              "1 the registry started but never answered (it was stopped again).")


@registry_app.command("up", help="Start the registry (or leave the running one); with no flags, exactly as "
                                  "recorded in the state dir (after a reboot). " + EXIT_CODES)
@handle_errors
def up_command(
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535,
                                       help="Port to listen on [default: as recorded, else 5000]."),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="Address to listen on [default: as recorded, else 0.0.0.0]."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Image storage [default: as recorded, "
                                                                      "else STATE_DIR/data]."),
    hostname: List[str] = typer.Option([], "--hostname", help="Name or IP nodes use (repeatable); all go in "
                                                             "the certificate [default: as recorded, else this "
                                                             "host's name]."),
    tls: Optional[str] = typer.Option(None, "--tls", help="auto: make a CA and a server certificate [default]."),
    cert: Optional[Path] = typer.Option(None, "--cert", help="Server certificate (PEM) instead of --tls auto."),
    key: Optional[Path] = typer.Option(None, "--key", help="Key for --cert."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA behind --cert, recorded for push/config."),
    no_tls: bool = typer.Option(False, "--no-tls", help="Plain HTTP (nodes then need it marked insecure)."),
    auth: Optional[str] = typer.Option(None, "--auth", help="htpasswd (a generated password) or none "
                                                          "[default: as recorded, else htpasswd]."),
    username: Optional[str] = typer.Option(None, "--username", help="The registry user --auth htpasswd creates "
                                                                    "[default: as recorded, else mirror]."),
    bundle: Optional[Path] = typer.Option(None, "--from-bundle", help="Bundle carrying the registry image."),
    registry_image: Optional[str] = typer.Option(
        None, "--registry-image", help="Image to run [default: the library/registry image in the bundle]."),
    engine: Optional[str] = typer.Option(
        None, "--engine", help="docker (DOCKER_HOST; the container uses the host network), binary "
                                 "(registry or docker-registry on PATH, else /bin/registry out of the "
                                 "--from-bundle registry image), or auto: docker when reachable and given "
                                 "the image, else binary [default: as recorded, else auto]."),
    container_name: Optional[str] = typer.Option(
        None, "--container-name", help="Docker container name [default: as recorded, else mirror-registry]."),
    print_systemd_unit: bool = typer.Option(
        False, "--print-systemd-unit", help="Prepare config, certificate and password, print a systemd unit "
                                            "running the binary, start nothing."),
    reconfigure: bool = typer.Option(
        False, "--reconfigure", "--replace",
        help="Change what nodes use (port, address, data dir, TLS, auth; certificate names are only added), "
             "stopping the registry running as recorded [default: refuse]."),
    no_space_check: bool = typer.Option(
        False, "--no-space-check", help="Start even when the data dir has too little free space for the "
                                        "--from-bundle bundle's images it does not hold yet."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="s3://BUCKET[/PREFIX]: keep the images on S3-compatible object storage (MinIO, "
                                "Ceph RGW, ...) instead of --data-dir; registries on the same storage serve "
                                "the same images. Keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                                "--s3-credentials-file [default: as recorded]."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", help="The storage's URL, "
                                                                          "http(s)://HOST[:PORT]."),
    s3_region: Optional[str] = typer.Option(None, "--s3-region", help="The bucket's region [default: us-east-1]."),
    s3_credentials_file: Optional[Path] = typer.Option(
        None, "--s3-credentials-file", help="AWS-style INI file with [default] aws_access_key_id and "
                                            "aws_secret_access_key (instead of the environment)."),
    join: Optional[Path] = typer.Option(
        None, "--join", help="Serve the same images as another host: its `mirror registry export-join` file "
                             "(storage, HTTP secret, user, CA); this host's S3 keys as for --storage."),
    state_dir: Optional[Path] = StateDirOption,
    json_report: bool = JsonOption,
) -> None:
    if tls not in (None, "auto"):
        raise UsageError(f"--tls {tls}: only 'auto' (or --cert/--key, or --no-tls)")
    if no_tls and (cert or key):
        raise UsageError("--no-tls cannot go with --cert/--key")
    if bool(cert) != bool(key):
        raise UsageError("--cert and --key go together")
    if auth not in (None, "htpasswd", "none"):
        raise UsageError(f"--auth {auth}: expected htpasswd or none")
    from ..server.lifecycle import UpOptions, up  # the Docker SDK and cryptography: only when needed
    from ..server.state import default_state_dir

    options = UpOptions(
        state_dir=(state_dir or default_state_dir()).absolute(),
        data_dir=data_dir, port=port, address=address, hostnames=list(hostname),
        tls="none" if no_tls else ("given" if cert else tls), cert=cert, key=key, ca_file=ca_file,
        auth=auth, username=username, bundle=bundle, registry_image=registry_image, engine=engine,
        systemd_unit=print_systemd_unit, container_name=container_name, reconfigure=reconfigure,
        space_check=not no_space_check,
        storage=storage, s3_endpoint=s3_endpoint, s3_region=s3_region, s3_credentials_file=s3_credentials_file,
        join=join,
    )
    result = up(options)
    for note in result.notes:
        typer.echo(f"mirror: {note}", err=True)
    if json_report:
        emit_json(_up_json(result))
    elif result.systemd_unit:
        typer.echo(result.systemd_unit, nl=False)  # stdout is the unit file alone
        for line in up_lines(result, sys.stderr.isatty()):
            typer.echo(line, err=True)
        typer.echo("install: save stdout as /etc/systemd/system/mirror-registry.service, then "
                   "`systemctl enable --now mirror-registry`", err=True)
    else:
        for line in up_lines(result, sys.stdout.isatty()):
            typer.echo(line)
        typer.echo("next: mirror push BUNDLE   (finds this registry without flags)")


def up_lines(result: UpResult, on_terminal: bool) -> list[str]:
    """What `up` did. A new password is shown only to a terminal: redirected output ends up in logs."""
    state = result.state
    verb = "prepared" if result.systemd_unit else ("already running" if result.already_running else "running")
    remote = [n for n in state.hostnames if n not in LOOPBACK] or state.hostnames
    lines = [f"registry {verb} at {state.url} ({state.engine}), data in "
             + (f"{state.storage} at {state.s3_endpoint}" if state.storage else state.data_dir),
             f"  nodes reach it as: {', '.join(f'{n}:{state.port}' for n in remote)}"]
    if state.ca_file:
        lines.append(f"  CA for nodes: {state.ca_file}")
    if result.credentials and result.new_password and on_terminal:
        lines += [f"  user {result.credentials.username}, password {result.credentials.password}",
                  f"  (shown once; kept in {state.credentials_file}, mode 0600)"]
    elif result.credentials:
        lines.append(f"  user {result.credentials.username}, password in {state.credentials_file} (mode 0600)")
    return lines


def _up_json(result: UpResult) -> dict:
    state = result.state
    doc = {"url": state.url, "engine": state.engine, "already_running": result.already_running,
           "hostnames": state.hostnames, "data_dir": state.data_dir, "ca_file": state.ca_file,
           "storage": state.storage or "filesystem", "s3_endpoint": state.s3_endpoint,
           "credentials_file": state.credentials_file, "systemd_unit": result.systemd_unit}
    if result.credentials:
        doc["username"] = result.credentials.username  # the password stays in credentials_file
    return doc


@registry_app.command("down", help="Stop the registry; its images are kept unless --purge.")
@handle_errors
def down_command(
    purge: bool = typer.Option(False, "--purge", help="Also delete what up created: images, certificates, "
                                                      "password; a --data-dir or --state-dir that existed "
                                                      "before keeps its other files."),
    state_dir: Optional[Path] = StateDirOption,
) -> None:
    from ..server.lifecycle import down
    from ..server.state import default_state_dir

    result = down((state_dir or default_state_dir()).absolute(), purge=purge)
    typer.echo("registry stopped" if result.stopped else "no registry was running")
    for path in result.purged:
        typer.echo(f"deleted {path}")
    for path in result.kept:
        typer.echo(f"kept {path} (up did not create it)")
