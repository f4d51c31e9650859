"""Entities: the keys model services look features up by."""

from feast import Entity, ValueType

# A shop customer; its key is customers.id.
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.INT64,
    description="A shop customer (public.customers.id)",
)

# A product in the catalogue; its key is products.id.
product = Entity(
    name="product",
    join_keys=["product_id"],
    value_type=ValueType.INT64,
    description="A catalogue product (public.products.id)",
)

# An order; its key is orders.id.
order = Entity(
    name="order",
    join_keys=["order_id"],
    value_type=ValueType.INT64,
    description="An order (public.orders.id)",
)
