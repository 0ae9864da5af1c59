#!/usr/bin/env python3
"""Checks the admin API's OpenAPI document against a live server.

For every path the document says this component serves (x-postern-served-by):
  - without credentials: public paths (security: []) answer, the rest 401;
  - with the read-only token: reads answer 200 with a body that validates
    against the documented schema and the documented content type;
    actions answer 403;
  - with the admin token: actions answer 200 and validate.
Paths the document gives only to the other component answer 404 (or 405
for a method this one takes nowhere) here, so the
document cannot promise what a server does not do. A bad request-log filter
answers 400 with the Error schema.

Needs `jsonschema` (the OAuth test venv has it: e2e/oauth/requirements.txt).
Prints one JSON object; exit 0 when every check passed.
"""

import argparse
import http.client
import json
import sys
import urllib.parse

import jsonschema

FILL = {"name": "nobody", "namespace": "default"}


def call(base, method, path, token=None):
    """(status, content type, parsed JSON or text) of one request."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    ctype = resp.getheader("Content-Type", "")
    if ctype.startswith("text/event-stream"):
        # A live tail never ends: the head is what is checked.
        conn.close()
        return resp.status, ctype, None
    body = resp.read()
    conn.close()
    if ctype.startswith("application/json"):
        try:
            return resp.status, ctype, json.loads(body)
        except ValueError:
            return resp.status, ctype, body.decode("utf-8", "replace")
    return resp.status, ctype, body.decode("utf-8", "replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the admin port, http://host:port")
    ap.add_argument("--component", required=True, choices=["dataplane", "operator"])
    ap.add_argument("--admin-token-file", required=True)
    ap.add_argument("--read-token-file", required=True)
    args = ap.parse_args()
    admin = open(args.admin_token_file).read().strip()
    read = open(args.read_token_file).read().strip()

    failures, checked = [], 0

    def fail(msg):
        failures.append(msg)

    status, _, doc = call(args.url, "GET", "/api/v1/openapi.json")
    if status != 200 or not isinstance(doc, dict):
        print(json.dumps({"ok": False, "failures": [f"openapi.json: {status}"]}))
        return 1
    jsonschema.Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})

    def validate(where, schema, value):
        root = dict(schema)
        root["components"] = doc["components"]
        try:
            jsonschema.Draft202012Validator(root).validate(value)
        except jsonschema.ValidationError as e:
            fail(f"{where}: {e.message} at {list(e.absolute_path)}")

    for path, item in doc["paths"].items():
        concrete = path
        for key, value in FILL.items():
            concrete = concrete.replace("{" + key + "}", value)
        for method, op in item.items():
            method = method.upper()
            served = args.component in op.get("x-postern-served-by", [])
            public = op.get("security") == []
            where = f"{method} {path}"
            checked += 1
            if not served:
                status, _, _ = call(args.url, method, concrete, admin)
                if status not in (404, 405):
                    fail(f"{where}: not served by {args.component} but answered {status}")
                continue
            status, ctype, body = call(args.url, method, concrete)
            if public:
                if str(status) not in op["responses"]:
                    fail(f"{where}: public, answered an undocumented {status}")
                continue
            if status != 401:
                fail(f"{where}: without credentials answered {status}, not 401")
            elif isinstance(body, dict):
                validate(f"{where} 401", op["responses"]["401"]["content"]["application/json"]["schema"], body)
            action = method == "POST"
            status, ctype, body = call(args.url, method, concrete, read)
            if action:
                if status != 403:
                    fail(f"{where}: the read token answered {status}, not 403")
                status, ctype, body = call(args.url, method, concrete, admin)
            if status != 200:
                fail(f"{where}: answered {status}: {body}")
                continue
            content = op["responses"]["200"].get("content", {})
            documented = next(iter(content), None)
            if documented and not ctype.startswith(documented):
                fail(f"{where}: content type {ctype}, documented {documented}")
            if documented == "application/json":
                validate(where, content[documented]["schema"], body)

    if args.component == "dataplane":
        status, _, body = call(args.url, "GET", "/api/v1/requests?status=abc", read)
        checked += 1
        if status != 400:
            fail(f"a bad filter answered {status}")
        else:
            validate("GET /api/v1/requests 400", {"$ref": "#/components/schemas/Error"}, body)

    print(json.dumps({"ok": not failures, "checked": checked, "failures": failures}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
