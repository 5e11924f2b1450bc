"""Demo tenants: synthetic users with ground-truth labels, and real Berka bank ledgers.

* :func:`generate_tenants` / :func:`iter_tenants`: realistic UK personal-finance users with
  planted anomalies and recurring-series labels (:func:`write_labels`, :func:`read_labels`).
* :func:`load_berka_tenants`: one tenant per account of the PKDD'99 Berka transactions.
* :func:`load_merchant_names` / :func:`load_merchant_catalog`: real merchant strings.
"""

from scale_ray.demo.berka import load_berka_tenants
from scale_ray.demo.generator import (
    ANOMALY_KINDS,
    DEFAULT_END,
    DemoTenant,
    PlantedAnomaly,
    RecurringSeries,
    generate_tenants,
    iter_tenants,
    read_labels,
    write_labels,
)
from scale_ray.demo.merchants import (
    MerchantRecord,
    load_merchant_catalog,
    load_merchant_names,
    merchant_bucket,
)

__all__ = [
    "ANOMALY_KINDS",
    "DEFAULT_END",
    "DemoTenant",
    "MerchantRecord",
    "PlantedAnomaly",
    "RecurringSeries",
    "generate_tenants",
    "iter_tenants",
    "load_berka_tenants",
    "load_merchant_catalog",
    "load_merchant_names",
    "merchant_bucket",
    "read_labels",
    "write_labels",
]
