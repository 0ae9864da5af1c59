//! The tunnel's parsers, fed from memory: what an agent, another replica
//! or a WebSocket client sends first.

use std::sync::LazyLock;

use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::FIXTURE;
use crate::tunnel::auth::{AgentKey, peek};
use crate::tunnel::peer::handshake::{self, PeerKey};
use crate::tunnel::protocol::{self, Hello};
use crate::tunnel::ws::{WsStream, config};

/// The most bytes read from one fuzzed WebSocket.
const WS_READ: u64 = 1 << 20;

static KEY: LazyLock<AgentKey> =
    LazyLock::new(|| AgentKey::parse("fuzzing-hs256-secret-0123456789").expect("an HS256 key"));

/// One input read three ways: (1) as the agent listener reads a hello
/// frame, whose token then goes through `peek` and a real key's check; a
/// hello that parses must write back to a frame that reads the same; (2) as
/// the peer port's handshake reads a dialler's answer (the input cannot
/// hold the secret's proof, so it must be refused); (3) as the WebSocket
/// transport's data-plane end reads frames into bytes.
pub fn tunnel_hello(input: &[u8]) {
    let rt = &FIXTURE.rt;
    let mut reader = input;
    if let Ok(hello) = rt.block_on(protocol::read_hello(&mut reader)) {
        let mut frame = Vec::new();
        rt.block_on(protocol::write_frame(&mut frame, &hello))
            .expect("a hello that was read writes");
        let again: Hello = rt
            .block_on(protocol::read_hello(&mut frame.as_slice()))
            .expect("a written hello reads");
        assert_eq!(again, hello, "a hello changed through write/read");
        let _ = peek(&hello.token);
        for tunnel in hello.tunnels.iter().take(4) {
            let _ = KEY.verify(&hello.token, tunnel);
        }
    }
    let mut io = tokio::io::join(input, tokio::io::sink());
    let key = PeerKey::new(b"fuzzing-peer-secret");
    let accepted = rt.block_on(handshake::accept(&mut io, &key));
    assert!(
        accepted.is_err(),
        "the peer port let in bytes without the secret"
    );
    let ws = async {
        let io = tokio::io::join(input, tokio::io::sink());
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
        let mut out = Vec::new();
        let _ = WsStream::new(ws).take(WS_READ).read_to_end(&mut out).await;
    };
    rt.block_on(ws);
}
