"""``scale-ray``: operator commands (tokens, demo data, starting the local app)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scale_ray.settings import Settings

DEMO_USER = "demo-0001"


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from scale_ray.auth import mint_token

    scopes = ("admin",) if args.admin else ()
    print(mint_token(settings, args.user, ttl_s=args.ttl, scopes=scopes))
    return 0


def _ledger_is_empty(settings: Settings) -> bool:
    from scale_ray.ledger.reader import LedgerReader

    reader = LedgerReader(settings)
    return reader.transactions.latest_version() == 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from scale_ray.demo.loader import load_demo
    from scale_ray.ledger.offline import OfflineLedgerWriter

    if args.if_empty and not _ledger_is_empty(settings):
        print(f"ledger under {settings.path()} already holds data; demo load skipped")
        return 0
    report = load_demo(
        settings,
        OfflineLedgerWriter(settings),
        users=args.users,
        years=args.years,
        seed=args.seed,
        berka_limit=args.berka_limit,
        labels_path=Path(args.labels) if args.labels else None,
    )
    print(json.dumps(report.__dict__))
    return 0


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: schedule on the logical GPU anyway
        return False


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    return env


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Demo data if none, a local Ray head (one logical GPU if none), then ``serve run``."""
    from scale_ray.auth import mint_token
    from scale_ray.ledger.delta import ensure_tables

    ensure_tables(settings)
    if _ledger_is_empty(settings) and not args.no_demo:
        print("loading demo data (first run) ...", flush=True)
        _cmd_demo(
            argparse.Namespace(
                if_empty=True, users=args.demo_users, years=args.demo_years, seed=7,
                berka_limit=args.berka_limit, labels=None,
            ),
            settings,
        )  # fmt: skip
    from scale_ray.models.hypcd.training_data import ensure_categorizer

    print("categorizer: checking the model registry (the first run trains one) ...", flush=True)
    print(f"categorizer version {ensure_categorizer(settings)}", flush=True)
    from scale_ray.models.anomaly.training import ensure_anomaly_model

    print("anomaly model: checking the model registry (the first run fits one) ...", flush=True)
    print(f"anomaly model version {ensure_anomaly_model(settings)}", flush=True)
    from scale_ray.models.forecast.training import ensure_forecaster

    print("forecaster: checking the model registry (the first run fits one) ...", flush=True)
    print(f"forecaster version {ensure_forecaster(settings)}", flush=True)
    env = _ray_env()
    env.update(settings.as_env())
    ray_bin = str(Path(sys.executable).with_name("ray"))
    serve_bin = str(Path(sys.executable).with_name("serve"))
    running = subprocess.run([ray_bin, "status"], env=env, capture_output=True).returncode == 0
    if not running:
        cmd = [ray_bin, "start", "--head", "--disable-usage-stats", "--include-dashboard=false"]
        # Logical CPUs for scheduling: every deployment reserves a fraction, and on a 2-core
        # laptop the model deployments would otherwise leave no whole CPU for import tasks.
        cmd.append(f"--num-cpus={max(4, os.cpu_count() or 1)}")
        if not _has_gpu():
            cmd.append("--num-gpus=1")  # one logical GPU so the fractional-GPU config schedules
        subprocess.run(cmd, env=env, check=True)
    token = mint_token(settings, DEMO_USER)
    url = f"http://{settings.http_host}:{settings.http_port}"
    token_file = settings.path("demo", "token")
    banner = (
        f"\nSCALE is starting at {url}\n"
        f"demo user: {DEMO_USER}\n"
        f"demo token (also in {token_file}):\n{token}\n\n"
        f'try: curl -H "Authorization: Bearer $(cat {token_file})" {url}/v1/accounts\n'
    )
    Path(settings.path("demo")).mkdir(parents=True, exist_ok=True)
    Path(token_file).write_text(token + "\n")
    print(banner, flush=True)
    config = str(Path(args.config).resolve())
    os.execve(serve_bin, [serve_bin, "run", config], env)
    return 0  # pragma: no cover


def _cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    return subprocess.run([ray_bin, "stop"], env=_ray_env()).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scale-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("token", help="mint a bearer token for a user (development)")
    p.add_argument("user")
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    p.add_argument("--admin", action="store_true", help="add the admin scope")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("demo", help="generate demo users and load real Berka tenants")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--years", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--berka-limit", type=int, default=None, help="0 skips Berka; default all")
    p.add_argument("--labels", default=None, help="where to write the planted-anomaly labels")
    p.add_argument("--if-empty", action="store_true", help="only when the ledger is empty")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("up", help="demo data if none, local Ray head, serve run serve_config.yaml")
    p.add_argument("--config", default="serve_config.yaml")
    p.add_argument("--no-demo", action="store_true")
    p.add_argument("--demo-users", type=int, default=20)
    p.add_argument("--demo-years", type=float, default=3.0)
    p.add_argument("--berka-limit", type=int, default=None)
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("down", help="stop the local Ray cluster")
    p.set_defaults(func=_cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
