//! The one way tests start a process: [`Launch`] (program, arguments,
//! environment, a scratch folder) and [`Proc`], the child it spawns, whose
//! output goes to a log file, which is killed on drop and whose last log
//! lines are printed when a test fails while it runs.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dirs::tmp_dir;
use crate::wait::PATIENCE;

/// How many log lines a failing test prints per process.
const TAIL: usize = 200;

/// A process to start: built by value, then [`Launch::spawn`] or
/// [`Launch::start`].
#[derive(Debug)]
pub struct Launch {
    name: String,
    program: PathBuf,
    /// A command that runs the program (`prlimit ... --`), if any.
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    dir: PathBuf,
    log: PathBuf,
    addr_file: Option<PathBuf>,
}

impl Launch {
    /// `program`, named `name` in messages, with a fresh scratch folder.
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Launch {
        let dir = tmp_dir(name);
        Launch {
            name: name.into(),
            program: program.into(),
            wrapper: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            log: dir.join("log"),
            dir,
            addr_file: None,
        }
    }

    /// Its name in messages.
    pub fn named(mut self, name: &str) -> Launch {
        self.name = name.into();
        self
    }

    /// Another program, same arguments (`$POSTERN_BIN` in benchmarks).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Launch {
        self.program = program.into();
        self
    }

    /// Runs the program through `wrapper` (its words, then the program and
    /// its arguments), as `prlimit --nofile=N:N --` does.
    pub fn wrapped<I, S>(mut self, wrapper: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.wrapper = wrapper.into_iter().map(|w| w.as_ref().into()).collect();
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Launch {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Launch::arg)
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        let value = Some(value.as_ref().to_os_string());
        self.envs.push((key.as_ref().to_os_string(), value));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Launch {
        self.envs.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Adds `--addr-file DIR/addrs.json`, which [`Launch::start`] waits for.
    pub fn addr_file(self) -> Launch {
        let path = self.dir.join("addrs.json");
        let mut launch = self.arg("--addr-file").arg(&path);
        launch.addr_file = Some(path);
        launch
    }

    /// The scratch folder (configuration, token files, the log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the output goes; a peer may be told to log there too.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Writes `DIR/name` and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    pub fn spawn(self) -> Proc {
        let file = std::fs::File::create(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        let err = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut command = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({command:?}): {e}", self.name));
        Proc {
            name: self.name,
            child: Some(child),
            log: self.log,
        }
    }

    /// Spawns and waits for the address file ([`Launch::addr_file`]).
    pub async fn start(self) -> (Proc, Addrs) {
        let path = self.addr_file.clone();
        let path = path.unwrap_or_else(|| panic!("{} was started without --addr-file", self.name));
        let mut proc = self.spawn();
        let addrs = proc.addrs(&path).await;
        (proc, addrs)
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        let child = self.child.as_ref();
        child.map_or_else(|| panic!("{} was killed", self.name), Child::id)
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its exit status, once it exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits (blocking) for it to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads `{"name": "HOST:PORT", ...}` once the process has written it.
    async fn addrs(&mut self, path: &Path) -> Addrs {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(value) = serde_json::from_str::<Value>(&text)
            {
                return Addrs(value);
            }
            if let Some(exit) = self.exited() {
                panic!("{} exited ({exit}) before listening", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} wrote no address file in {PATIENCE:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL)..];
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.name,
                self.log.display()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// The listeners a process reported in its address file.
#[derive(Clone, Debug)]
pub struct Addrs(Value);

impl Addrs {
    /// The address named `key`; panics when there is none.
    pub fn get(&self, key: &str) -> SocketAddr {
        self.try_get(key)
            .unwrap_or_else(|| panic!("the address file has no usable {key:?}: {}", self.0))
    }

    pub fn try_get(&self, key: &str) -> Option<SocketAddr> {
        self.0[key].as_str().and_then(|s| s.parse().ok())
    }
}
