#!/usr/bin/env python3
"""An MCP server from the PyPI `mcp` SDK (MCPServer, streamable HTTP) for
Postern's OAuth tests: the backend behind a protected host.

Serves http://127.0.0.1:PORT/mcp and prints exactly one line,
`listening on 127.0.0.1:PORT`, on stdout once it accepts connections.

Tools:
  whoami  the identity headers this request carried (X-Forwarded-User,
          -Email, -Groups), whether an Authorization header (or a Cookie)
          reached the backend, and the Host it was addressed to.
  echo    returns its `text` argument.

Test hook (not MCP): GET /_backend/log returns every HTTP request the server
received (method, path, headers), oldest first, so a test can check that no
request at all (initialize, GET stream, DELETE) carried the client's bearer.

The SDK's DNS-rebinding protection stays on, as it is by default for a server
bound to 127.0.0.1: Host must be 127.0.0.1:*, localhost:* or [::1]:*, else it
answers 421 (Origin, when sent, must be http://127.0.0.1:* etc., else 403).
Postern rewrites Host to the backend's own address, so that passes; a test
that wants the check gone passes --no-dns-rebinding-protection, and
--allowed-host adds Host values.
"""

import argparse
import asyncio
import json
import socket
import sys
import time

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

LOG_PATH = "/_backend/log"


def build_server():
    server = MCPServer(name="postern-e2e-backend", version="1")

    @server.tool(description="Identity headers and credentials that reached the backend with this request.")
    def whoami(ctx: Context) -> dict:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        groups = headers.get("x-forwarded-groups")
        return {
            "user": headers.get("x-forwarded-user"),
            "email": headers.get("x-forwarded-email"),
            "groups": groups,
            "groups_list": [g.strip() for g in groups.split(",") if g.strip()] if groups else [],
            "authorization_present": "authorization" in headers,
            "cookie_present": "cookie" in headers,
            "host": headers.get("host"),
            "mcp_session_id": headers.get("mcp-session-id"),
            "mcp_protocol_version": headers.get("mcp-protocol-version"),
            "header_names": sorted(headers),
        }

    @server.tool(description="Returns the text it is given.")
    def echo(text: str) -> str:
        return text

    return server


class RequestLog:
    """ASGI middleware: records every HTTP request and serves the record."""

    def __init__(self, app):
        self.app = app
        self.entries = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == LOG_PATH:
            body = json.dumps(self.entries, indent=2).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.entries.append({
            "time": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        })
        await self.app(scope, receive, send)


async def serve(args):
    if args.no_dns_rebinding_protection:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    else:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", *args.allowed_host],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*", *args.allowed_origin],
        )
    app = build_server().streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=args.stateless,
        json_response=args.json_response,
        transport_security=security,
        host="127.0.0.1",
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(RequestLog(app), log_level="info" if args.verbose else "warning",
                            access_log=args.verbose, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            sys.exit("mcp_server: uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await task


def main():
    ap = argparse.ArgumentParser(description="MCP backend (mcp SDK MCPServer, streamable HTTP at /mcp).")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--stateless", action="store_true", help="stateless streamable HTTP (no Mcp-Session-Id)")
    ap.add_argument("--json-response", action="store_true", help="answer POSTs with JSON instead of SSE")
    ap.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT|:*]",
                    help="also accept this Host header (repeatable)")
    ap.add_argument("--allowed-origin", action="append", default=[], metavar="ORIGIN",
                    help="also accept this Origin header (repeatable)")
    ap.add_argument("--no-dns-rebinding-protection", action="store_true",
                    help="accept any Host and Origin header")
    ap.add_argument("--verbose", action="store_true", help="uvicorn info and access logs on stderr")
    args = ap.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
