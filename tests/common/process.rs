//! The `deskprov` binary as a child process on loopback ports (for crash and CLI tests).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_deskprov");

pub struct Proc {
    pub child: Child,
    pub admin: String,
    /// The phone listener's HTTPS URL.
    pub phones: String,
    /// Every line of the start-up banner.
    pub banner: Vec<String>,
}

/// Writes a config for `data_dir` with loopback ephemeral ports and returns its path.
pub fn write_config(dir: &Path, data_dir: Option<&Path>) -> std::path::PathBuf {
    let mut text = String::new();
    if let Some(d) = data_dir {
        text.push_str(&format!("data_dir = {:?}\n", d.display().to_string()));
    }
    text.push_str(
        "[listen]\nphones = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[store]\ncache_mb = 8\n",
    );
    let p = dir.join("deskprov.toml");
    std::fs::write(&p, text).unwrap();
    p
}

impl Proc {
    /// Starts `deskprov serve --config <config>` in `cwd` and waits for its banner.
    pub fn serve(cwd: &Path, config: &Path) -> Proc {
        Self::serve_logging(cwd, config, "warn", Stdio::inherit())
    }

    /// Like [`Proc::serve`], with `RUST_LOG=<filter>` and the log (stderr) sent to `log`.
    pub fn serve_logging(cwd: &Path, config: &Path, filter: &str, log: Stdio) -> Proc {
        Self::serve_logging_args(cwd, config, filter, log, &[])
    }

    /// Like [`Proc::serve_logging`], with global arguments before `serve` (`--log-format json`).
    pub fn serve_logging_args(
        cwd: &Path,
        config: &Path,
        filter: &str,
        log: Stdio,
        args: &[&str],
    ) -> Proc {
        let mut child = Command::new(BIN)
            .current_dir(cwd)
            .args(args)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn deskprov");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut admin, mut phones) = (None, String::new());
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.trim().strip_prefix("admin API:") {
                admin = Some(rest.trim().replace("127.0.0.1", "localhost"));
            }
            if let Some(rest) = line.trim().strip_prefix("phones:") {
                if rest.trim().starts_with("https://") {
                    phones = rest.trim().replace("127.0.0.1", "localhost");
                }
            }
            let done = line.trim().starts_with("admin token");
            banner.push(line);
            if done {
                break;
            }
        }
        let admin = admin.unwrap_or_else(|| panic!("no banner from deskprov: {banner:?}"));
        Proc {
            child,
            admin,
            phones,
            banner,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("deskprov did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
