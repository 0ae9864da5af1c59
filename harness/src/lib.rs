//! One test harness for Postern, shared by the data plane's tests, the
//! cluster tests (`postern-tests`) and the benchmarks:
//!
//! - [`Postern`] and [`Operator`]: the workspace's binaries started with
//!   small builders, every listener on port 0, the real addresses read back
//!   from `--addr-file`, output in a log file printed when a test fails,
//!   killed on drop; [`Launch`] and [`Proc`] for any other process.
//! - [`peers`]: real peers from Debian found on PATH (microsocks,
//!   tinyproxy, dante, haproxy, nginx, curl, python). Under `CI=true` a
//!   missing peer fails the test naming it; elsewhere the test says why it
//!   skips.
//! - In-process servers: [`Backend`] for the reverse proxy and the small
//!   TCP [`targets`] of the forward proxy.
//! - [`pki`]: a private CA and the leaf certificates it signs.
//! - [`wait`]: bounded polling instead of sleeps.
//!
//! It never links kube: the data plane's tests must stay cheap to build.

pub mod agent;
pub mod backend;
pub mod curl;
pub mod dirs;
pub mod http;
pub mod manifests;
pub mod memory;
pub mod oauth;
pub mod operator;
pub mod peers;
pub mod pki;
pub mod postern;
pub mod process;
pub mod python;
pub mod targets;
pub mod tunnel;
pub mod wait;

pub use agent::{Agent, AgentBuilder, TunnelKey, postern_stdout, tunnel_yaml};
pub use backend::Backend;
pub use curl::{Curl, curl, curl_blocking, fetch};
pub use dirs::{binary, closed_port, free_addr, free_port, in_ci, loopback, repo_root, tmp_dir};
pub use http::{
    HARNESS_READ_TOKEN, HttpResponse, admin_get, call, harness_read_token_file, http_get, raw,
    read_response, request,
};
pub use manifests::{
    LOOPBACK_ALLOWED, Manifests, documents, indent, prefix_route_yaml, target_yaml, tls_secret,
    user_yaml,
};
pub use operator::{Operator, OperatorBuilder};
pub use peers::{peer, python_with};
pub use pki::{Ca, Leaf, PemFiles};
pub use postern::{Postern, PosternBuilder, SnapshotView, field, metric_value, run_to_exit};
pub use process::{Addrs, Launch, Proc};
pub use targets::{blackhole, echo_target, http_target, text_target, tls_front, tls_target};
pub use tunnel::{closed_within, connect_status, echo_roundtrip, open_tunnel};
pub use wait::{PATIENCE, eventually, wait_for, wait_port};
