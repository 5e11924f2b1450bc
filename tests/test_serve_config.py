"""serve_config.yaml is valid for Serve and names importable builders."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[1]


def test_serve_config_validates() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    names = {app.name for app in schema.applications}
    assert "scale" in names
    for app in schema.applications:
        module, attr = app.import_path.split(":")
        assert callable(getattr(importlib.import_module(module), attr))
    gateway = next(a for a in schema.applications if a.name == "scale")
    assert gateway.route_prefix == "/"


def test_builders_accept_the_config_args() -> None:
    """Serve hands builder args over as they are in the YAML: build each app from them."""
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    for app in config["applications"]:
        module, attr = app["import_path"].split(":")
        builder = getattr(importlib.import_module(module), attr)
        built = call_user_app_builder_with_args_if_necessary(builder, app.get("args", {}))
        assert isinstance(built, Application)


def test_config_names_exactly_the_deployments_the_app_builds() -> None:
    """A YAML entry for a deployment the builder does not make is rejected by Serve at deploy."""
    from ray.serve._private.build_app import build_app

    from deployments.app import build_app as build_scale

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (scale,) = [a for a in config["applications"] if a["name"] == "scale"]
    built = build_app(build_scale(scale.get("args", {})), name="scale")
    assert {d.name for d in built.deployments} == {d["name"] for d in scale["deployments"]}
    assert built.ingress_deployment_name == "Gateway"


def test_categorizer_takes_a_fifth_of_a_gpu_and_a_model_version() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (scale,) = [a for a in config["applications"] if a["name"] == "scale"]
    entry = {d["name"]: d for d in scale["deployments"]}["Categorizer"]
    assert entry["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.2}
    assert entry["user_config"] == {"model_version": "live"}
    scaling = entry["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 4)
    assert scaling["target_ongoing_requests"] > 0
    from deployments.categorizer import parse_user_config

    assert parse_user_config(entry["user_config"]) == ("live", 30.0)


def test_anomaly_scorer_is_cpu_only_with_a_model_version() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (scale,) = [a for a in config["applications"] if a["name"] == "scale"]
    entry = {d["name"]: d for d in scale["deployments"]}["AnomalyScorer"]
    assert entry["ray_actor_options"] == {"num_cpus": 0.5}  # no GPU
    assert entry["user_config"] == {"model_version": "live"}
    scaling = entry["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 4)
    assert scaling["target_ongoing_requests"] > 0
    from deployments.anomaly import parse_user_config

    assert parse_user_config(entry["user_config"]) == "live"


def test_forecaster_takes_two_fifths_of_a_gpu_and_a_model_version() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (scale,) = [a for a in config["applications"] if a["name"] == "scale"]
    entry = {d["name"]: d for d in scale["deployments"]}["Forecaster"]
    assert entry["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.4}
    assert entry["user_config"] == {"model_version": "live"}
    scaling = entry["autoscaling_config"]
    assert scaling["min_replicas"] == 1 and scaling["max_replicas"] >= 1
    assert scaling["target_ongoing_requests"] > 0
    from deployments.forecaster import parse_user_config

    assert parse_user_config(entry["user_config"]) == "live"
