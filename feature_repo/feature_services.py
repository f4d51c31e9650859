# Named feature_services, not services: `services` is a package of featurectl, imported first from the path.
"""Feature services: the features a model reads, named once. Their lookups through `featurectl serve` are logged
(what was served, when, with its status and event time) to a Delta table under data/logs/, which
`featurectl consistency` recomputes from the history to prove training equals serving (docs/serving.md)."""

from customers import customer_profile
from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from orders import customer_orders
from products import product_details

# What examples/model_service.py scores a customer and a product with; every lookup logged.
purchase_model = FeatureService(
    name="purchase_model",
    features=[
        customer_profile[["segment", "credit_limit"]],
        product_details[["price", "in_stock"]],
        customer_orders[["orders_24h", "spent_7d"]],
    ],
    logging_config=LoggingConfig(
        destination=FileLoggingDestination(path="data/logs/purchase_model"), sample_rate=1.0
    ),
)
