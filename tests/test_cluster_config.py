"""cluster.yaml validates against Ray's autoscaler schema."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(
        prepare_config(config)
    )  # fills Ray's defaults, then raises jsonschema.ValidationError when invalid
    assert config["head_node_type"] in config["available_node_types"]
