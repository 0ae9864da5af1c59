//! Real peers from Debian (`e2e/lib/packages.sh` lists them; `e2e/rig up`
//! installs them), found on PATH. Under `CI=true` a missing peer fails the
//! test, naming it; elsewhere the test prints why it skips.
//!
//! The peers that cannot bind port 0 get a free port picked here, their
//! own configuration in a scratch folder, and are waited for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dirs::{free_port, in_ci, loopback};
use crate::process::{Launch, Proc};
use crate::wait::wait_port;

/// Where Debian puts daemons that are not on a user's PATH.
const SBIN: [&str; 4] = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

/// The path of a peer binary; `None` (after saying why) outside CI, a
/// failure under `CI=true`.
pub fn peer(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(SBIN)
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        missing(&format!("the test peer `{name}` is not installed"));
    }
    found
}

/// Debian's python3 with `module` importable, or `None` as [`peer`] says.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = PathBuf::from("/usr/bin/python3");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        missing(&format!("/usr/bin/python3 cannot import {module}"));
        return None;
    }
    Some(python)
}

fn missing(what: &str) {
    assert!(
        !in_ci(),
        "{what} (CI=true: e2e/rig up installs it from Debian's packages, e2e/lib/packages.sh)"
    );
    eprintln!("SKIPPED: {what} (run e2e/rig up, or apt-get install it)");
}

/// `microsocks` on a free port, optionally with auth and an outgoing bind address.
pub async fn microsocks(
    auth: Option<(&str, &str)>,
    bind: Option<&str>,
) -> Option<(Proc, SocketAddr)> {
    let addr = loopback(free_port());
    let mut launch = Launch::new("microsocks", peer("microsocks")?).args([
        "-i",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
    ]);
    if let Some((u, p)) = auth {
        launch = launch.args(["-u", u, "-P", p]);
    }
    if let Some(b) = bind {
        launch = launch.args(["-b", b]);
    }
    let proc = launch.spawn();
    wait_port(addr).await;
    Some((proc, addr))
}

/// `tinyproxy` on a free port, optionally with Basic auth and connecting
/// out from `bind`; it logs each connection.
pub async fn tinyproxy(
    auth: Option<(&str, &str)>,
    bind: Option<&str>,
) -> Option<(Proc, SocketAddr)> {
    let addr = loopback(free_port());
    let launch = Launch::new("tinyproxy", peer("tinyproxy")?);
    let mut conf = format!(
        "Port {}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\nAllow 127.0.0.1\n",
        addr.port(),
        launch.log_path().display()
    );
    if let Some((u, p)) = auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    if let Some(b) = bind {
        conf.push_str(&format!("Bind {b}\n"));
    }
    let conf = launch.write("tinyproxy.conf", &conf);
    let proc = launch.arg("-d").arg("-c").arg(conf).spawn();
    wait_port(addr).await;
    Some((proc, addr))
}

/// Dante (`danted`) on a free port without auth (its username method
/// checks system accounts), connecting out from `external`.
pub async fn dante(external: &str) -> Option<(Proc, SocketAddr)> {
    let addr = loopback(free_port());
    let launch = Launch::new("dante", peer("danted")?);
    let conf = format!(
        "logoutput: {}\ninternal: 127.0.0.1 port = {}\nexternal: {external}\n\
         clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect\n}}\n\
         socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect\n}}\n",
        launch.log_path().display(),
        addr.port()
    );
    let conf = launch.write("danted.conf", &conf);
    let pid_file = launch.dir().join("danted.pid");
    let proc = launch
        .arg("-f")
        .arg(conf)
        .arg("-p")
        .arg(pid_file)
        .args(["-N", "1"])
        .spawn();
    wait_port(addr).await;
    Some((proc, addr))
}

/// An nginx configuration that keeps every file in `dir` and runs in the
/// foreground: `servers` goes inside `http { }`.
pub fn nginx_conf(dir: &Path, workers: u32, connections: u32, servers: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes {workers};\nworker_rlimit_nofile {};\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections {connections}; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{servers}}}\n",
        connections + 4000
    )
}

/// nginx (found with [`peer`]) on `servers`, its files in its scratch folder.
pub fn nginx(servers: &str) -> Option<Proc> {
    let launch = Launch::new("nginx", peer("nginx")?);
    let dir = launch.dir().to_path_buf();
    let conf = launch.write("nginx.conf", &nginx_conf(&dir, 1, 64, servers));
    let error_log = dir.join("error.log");
    Some(
        launch
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(error_log)
            .spawn(),
    )
}
