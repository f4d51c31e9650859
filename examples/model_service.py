"""A small model service: per request it fetches online features from the Feast feature server over
HTTP and scores them. The "model" is a stand-in formula; the feature fetch is the real thing.

    .venv/bin/featurectl serve &                                   # the feature server, port 6566
    .venv/bin/python examples/model_service.py --customer 1 --product 2
    .venv/bin/python examples/model_service.py --listen 8080       # then:
    curl -s -X POST localhost:8080/score -d '{"customer_id": 1, "product_id": 2}'

A missing entity is not an error: Feast answers with status NOT_FOUND and a null value, and the
service scores with defaults. In-process use of the same lookup: FeatureStore.get_online_features.
"""

from __future__ import annotations

import argparse
import json
import math
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import requests

FEATURES = [
    "customer_profile:segment",
    "customer_profile:credit_limit",
    "product_details:price",
    "product_details:in_stock",
]
SEGMENT_WEIGHT = {"gold": 1.0, "platinum": 1.5, "silver": 0.5}


def fetch(server: str, customer_id: int, product_id: int, timeout_s: float = 1.0) -> dict[str, Any]:
    """One POST /get-online-features for both entities; feature name -> value (None if not found)."""
    response = requests.post(
        f"{server}/get-online-features",
        json={"features": FEATURES, "entities": {"customer_id": [customer_id], "product_id": [product_id]}},
        timeout=timeout_s,
    )
    response.raise_for_status()
    body = response.json()
    names = body["metadata"]["feature_names"]
    return {
        name: (result["values"][0] if result["statuses"][0] == "PRESENT" else None)
        for name, result in zip(names, body["results"], strict=True)
    }


def score(features: dict[str, Any]) -> float:
    """Likelihood that the customer buys the product: a stand-in for a trained model."""
    if not features.get("in_stock"):
        return 0.0
    affordability = (features.get("credit_limit") or 0.0) / max(features.get("price") or 1.0, 1.0)
    z = -1.0 + 0.3 * math.log1p(affordability) + SEGMENT_WEIGHT.get(features.get("segment") or "", 0.0)
    return 1 / (1 + math.exp(-z))


def handle(server: str, request: dict[str, Any]) -> dict[str, Any]:
    features = fetch(server, int(request["customer_id"]), int(request["product_id"]))
    return {"score": round(score(features), 4), "features": features}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="http://127.0.0.1:6566", help="the Feast feature server")
    ap.add_argument("--customer", type=int)
    ap.add_argument("--product", type=int)
    ap.add_argument("--listen", type=int, help="serve POST /score on this port instead")
    args = ap.parse_args()
    if args.listen is None:
        print(json.dumps(handle(args.server, {"customer_id": args.customer, "product_id": args.product})))
        return

    class Score(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, body = 200, handle(args.server, request)
            except (ValueError, KeyError, TypeError) as exc:
                status, body = 400, {"error": f"expected {{'customer_id': int, 'product_id': int}}: {exc}"}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    print(f"model service on http://127.0.0.1:{args.listen}/score, features from {args.server}")
    HTTPServer(("127.0.0.1", args.listen), Score).serve_forever()


if __name__ == "__main__":
    main()
