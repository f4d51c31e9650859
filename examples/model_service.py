"""A small model service: per request it fetches online features from the Feast feature server over
HTTP and scores them. The "model" is a stand-in formula; the feature fetch is the real thing.

    .venv/bin/featurectl serve &                                   # the feature server, port 6566
    .venv/bin/python examples/model_service.py --customer 1 --product 2
    .venv/bin/python examples/model_service.py --listen 8080       # then:
    curl -s -X POST localhost:8080/score -d '{"customer_id": 1, "product_id": 2}'

It asks for the feature service ``purchase_model`` (feature_repo/feature_services.py): the features are named
once, in the repository, and `featurectl serve` logs what it served them, so `featurectl consistency` can prove
the model was served what it was trained on. A missing entity is not an error: Feast answers with status
NOT_FOUND and a null value, and the service scores with defaults. In-process use of the same lookup:
FeatureStore.get_online_features(features=store.get_feature_service("purchase_model"), ...).

When the feature server checks tokens (feature_store.yaml's ``auth: type: oidc``; docs/serving.md), the service
gets one from the OIDC provider as a client with a secret (OAuth2 client credentials, through Feast's own token
client, which reuses a token until shortly before it expires) and sends it with every fetch:

    FEATURE_SERVER_CLIENT_SECRET=<secret> .venv/bin/python examples/model_service.py --customer 1 --product 2 \
        --auth-discovery-url http://127.0.0.1:29180/realms/feast/.well-known/openid-configuration

(the local Keycloak's client ``model-service``; its secret is keycloak_model_service_secret in the stack's
``keycloak/clients.env``). A refused token (401) is dropped and fetched again once; a 403 names the view the client may not
read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import requests

SERVICE = "purchase_model"  # segment, credit_limit, price, in_stock, orders_24h, spent_7d
SEGMENT_WEIGHT = {"gold": 1.0, "platinum": 1.5, "silver": 0.5}


class Tokens:
    """Access tokens for the feature server from an OIDC provider (client credentials), by Feast's token client."""

    def __init__(self, discovery_url: str, client_id: str, client_secret: str) -> None:
        from feast.permissions.auth_model import OidcClientAuthConfig
        from feast.permissions.client.oidc_authentication_client_manager import OidcAuthClientManager

        config = OidcClientAuthConfig(
            type="oidc", auth_discovery_url=discovery_url, client_id=client_id, client_secret=client_secret
        )
        self._manager = OidcAuthClientManager(config)

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._manager.get_token()}"}

    def refused(self) -> None:
        """The server refused the token (revoked, or the provider restarted): the next header fetches anew."""
        self._manager.invalidate_token()


def fetch(
    server: str, customer_id: int, product_id: int, tokens: Tokens | None = None, timeout_s: float = 1.0
) -> dict[str, Any]:
    """One POST /get-online-features for both entities; feature name -> value (None if not found)."""
    body = {"feature_service": SERVICE, "entities": {"customer_id": [customer_id], "product_id": [product_id]}}
    url = f"{server}/get-online-features"
    response = requests.post(url, json=body, headers=tokens.header() if tokens else {}, timeout=timeout_s)
    if response.status_code == 401 and tokens is not None:
        tokens.refused()
        response = requests.post(url, json=body, headers=tokens.header(), timeout=timeout_s)
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


def handle(server: str, request: dict[str, Any], tokens: Tokens | None = None) -> dict[str, Any]:
    features = fetch(server, int(request["customer_id"]), int(request["product_id"]), tokens)
    return {"score": round(score(features), 4), "features": features}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="http://127.0.0.1:6566", help="the Feast feature server")
    ap.add_argument("--customer", type=int)
    ap.add_argument("--product", type=int)
    ap.add_argument("--listen", type=int, help="serve POST /score on this port instead")
    ap.add_argument(
        "--auth-discovery-url",
        help="the OIDC provider's discovery document, when the feature server checks tokens; the client secret "
        "comes from the environment variable FEATURE_SERVER_CLIENT_SECRET",
    )
    ap.add_argument("--client-id", default="model-service", help="this service's client in the OIDC provider")
    args = ap.parse_args()
    tokens = None
    if args.auth_discovery_url:
        secret = os.environ.get("FEATURE_SERVER_CLIENT_SECRET")
        if not secret:
            ap.error("--auth-discovery-url needs the client's secret in FEATURE_SERVER_CLIENT_SECRET")
        tokens = Tokens(args.auth_discovery_url, args.client_id, secret)
    if args.listen is None:
        request = {"customer_id": args.customer, "product_id": args.product}
        print(json.dumps(handle(args.server, request, tokens)))
        return

    class Score(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, body = 200, handle(args.server, request, tokens)
            except requests.HTTPError as exc:  # the feature server refused: its reason (a 403 names the view)
                status, body = 502, {"error": f"feature server: {exc.response.status_code} {exc.response.text}"}
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
