"""Points the webhooks in an add-on's manifests at its controller, a process on 127.0.0.1 outside the cluster.

Called by tests/cluster/addons.sh (up.sh) with what `kubectl kustomize` renders of an add-on's CRD or
webhook kustomization (build.sh copies both from the add-on's Go module) on stdin; prints a kubectl List
(JSON) for `kubectl apply -f -`:

- each CustomResourceDefinition, its conversion webhook (when it has one) served at --url;
- each Mutating/ValidatingWebhookConfiguration, named --prefix + its name (jobset's and Kueue's are both
  kubebuilder's "mutating-webhook-configuration"), each webhook served at --url, and with --resources only
  the webhooks whose rules name one of those resources;
- nothing else: the webhook Service is left out, as nothing of the add-on runs in the cluster.

A webhook is served at --url + its service's path, trusted through --ca-bundle (a PEM file).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterable
from typing import Any

import yaml

Object = dict[str, Any]
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def served_at(client_config: Object, url: str, ca_bundle: str) -> Object:
    """CLIENT_CONFIG with its in-cluster service replaced by URL (plus the service's path) and CA_BUNDLE."""
    path = client_config.get("service", {}).get("path", "")
    return {"url": url + path, "caBundle": ca_bundle}


def names_a_resource(webhook: Object, resources: set[str]) -> bool:
    return any(resources.intersection(rule.get("resources", [])) for rule in webhook.get("rules", []))


def rewrite(
    documents: Iterable[Object | None], *, url: str, ca_bundle: str, prefix: str, resources: set[str] | None
) -> list[Object]:
    """The objects to apply, as the module docstring says."""
    kept: list[Object] = []
    for document in documents:
        if not document:
            continue
        kind = document.get("kind")
        if kind == "CustomResourceDefinition":
            conversion = document["spec"].get("conversion", {})
            if conversion.get("strategy") == "Webhook":
                webhook = conversion["webhook"]
                webhook["clientConfig"] = served_at(webhook["clientConfig"], url, ca_bundle)
            kept.append(document)
        elif kind in WEBHOOK_KINDS:
            webhooks = [
                {**webhook, "clientConfig": served_at(webhook["clientConfig"], url, ca_bundle)}
                for webhook in document.get("webhooks", [])
                if resources is None or names_a_resource(webhook, resources)
            ]
            if webhooks:
                metadata = {**document["metadata"], "name": prefix + document["metadata"]["name"]}
                kept.append({**document, "metadata": metadata, "webhooks": webhooks})
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="where the controller serves its webhooks: https://127.0.0.1:PORT")
    parser.add_argument("--ca-bundle", required=True, help="PEM file of the CA of the webhook server's certificate")
    parser.add_argument("--prefix", default="", help="put before the name of each webhook configuration")
    parser.add_argument("--resources", help="comma-separated: keep only the webhooks for these resources")
    args = parser.parse_args()
    with open(args.ca_bundle, "rb") as pem:
        ca_bundle = base64.b64encode(pem.read()).decode("ascii")
    resources = set(args.resources.split(",")) if args.resources else None
    # libyaml's loader: the CRDs are megabytes, which the pure Python one takes seconds to read.
    documents = yaml.load_all(sys.stdin, Loader=yaml.CSafeLoader)
    items = rewrite(documents, url=args.url, ca_bundle=ca_bundle, prefix=args.prefix, resources=resources)
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)


if __name__ == "__main__":
    main()
