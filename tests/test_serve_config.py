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
