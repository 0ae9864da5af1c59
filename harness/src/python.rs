//! Python peers (Debian's python3 with websockets, grpcio): a server
//! script that writes its port to a file, and a client script that prints
//! `ok` when its checks pass.

use std::path::Path;
use std::process::Command;

use crate::dirs::loopback;
use crate::process::{Launch, Proc};
use crate::wait::{PATIENCE, wait_for, wait_port};

/// Starts a python peer that writes its port to a file; returns it and the port.
pub async fn python_server(python: &Path, name: &str, script: &str) -> (Proc, u16) {
    let launch = Launch::new(name, python);
    let path = launch.write(&format!("{name}.py"), script);
    let port_file = launch.dir().join(format!("{name}.port"));
    let proc = launch.arg(path).arg(&port_file).spawn();
    let what = format!("{name} to write its port");
    let port = wait_for(&what, PATIENCE, || {
        let port = std::fs::read_to_string(&port_file).ok();
        async move { port?.trim().parse().ok() }
    })
    .await;
    wait_port(loopback(port)).await;
    (proc, port)
}

/// Runs a python client script with `args`; it prints `ok` on success.
pub fn python_client(python: &Path, dir: &Path, name: &str, script: &str, args: &[&str]) {
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, script).expect("script");
    let out = Command::new("timeout")
        .arg("60")
        .arg(python)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WebSocket echo server on a free port (written to `argv[1]`).
pub const WS_ECHO_SERVER: &str = r#"
import asyncio, sys, websockets
async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with open(sys.argv[1], "w") as f:
            f.write(str(port))
        await asyncio.Future()
asyncio.run(main())
"#;

/// Connects to `127.0.0.1:argv[1]` as `ws://ws.test/echo` and checks
/// text and binary echoes; prints `ok`.
pub const WS_ECHO_CLIENT: &str = r#"
import asyncio, socket, sys, websockets
async def main(port):
    sock = socket.create_connection(("127.0.0.1", port))
    async with websockets.connect("ws://ws.test/echo", sock=sock, open_timeout=10) as ws:
        for i in range(3):
            await ws.send(f"hello {i}")
            reply = await asyncio.wait_for(ws.recv(), 5)
            assert reply == f"hello {i}", reply
        await ws.send(b"\x00\x01binary")
        reply = await asyncio.wait_for(ws.recv(), 5)
        assert reply == b"\x00\x01binary", reply
    print("ok")
asyncio.run(main(int(sys.argv[1])))
"#;

/// A gRPC server (generic handlers: unary with a trailer, server
/// streaming, an error) on a free port written to `argv[1]`.
pub const GRPC_ECHO_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
def say(request, context):
    context.set_trailing_metadata((("x-trailer", "yes"),))
    return b"echo:" + request
def count(request, context):
    for i in range(3):
        yield b"n%d" % i
def fail(request, context):
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")
handler = grpc.method_handlers_generic_handler("test.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
with open(sys.argv[1], "w") as f:
    f.write(str(port))
server.wait_for_termination()
"#;

/// Calls the [`GRPC_ECHO_SERVER`] at `127.0.0.1:argv[1]` as `grpc.test`,
/// checking replies, trailers, streams and status; prints `ok`.
pub const GRPC_ECHO_CLIENT: &str = r#"
import sys
import grpc
port = int(sys.argv[1])
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", "grpc.test")])
say = channel.unary_unary("/test.Echo/Say")
reply, call = say.with_call(b"hi", timeout=10)
assert reply == b"echo:hi", reply
trailers = dict(call.trailing_metadata())
assert trailers.get("x-trailer") == "yes", trailers
count = channel.unary_stream("/test.Echo/Count")
got = list(count(b"", timeout=10))
assert got == [b"n0", b"n1", b"n2"], got
try:
    channel.unary_unary("/test.Echo/Fail")(b"", timeout=10)
    raise SystemExit("Fail did not fail")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e.code()
    assert e.details() == "nope", e.details()
print("ok")
"#;
