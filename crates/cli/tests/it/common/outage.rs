//! Taking a database away from a running server: a PostgreSQL cluster of
//! the test's own (never the shared one on 5432), stopped as by a crash
//! and started again; and a small disk that a test can fill and empty.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL cluster on a free port, run as the `postgres` user
/// (`initdb`, `pg_ctl` and `postgres` refuse to run as root). Stopped and
/// removed when dropped.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
}

fn run_as_postgres(args: &[&str]) {
    let out = Command::new("runuser").args(["-u", "postgres", "--"]).args(args).output().expect("runuser");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePg {
    /// `initdb` in a fresh directory and start it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = Command::new("chown").args(["postgres:postgres", dir.path().to_str().unwrap()]).status().unwrap();
        assert!(st.success(), "chown postgres");
        let st = Command::new("chmod").args(["755", dir.path().to_str().unwrap()]).status().unwrap();
        assert!(st.success());
        let data = dir.path().join("data");
        run_as_postgres(&["initdb", "--no-sync", "-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = PrivatePg { dir, port };
        pg.start_again();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("log");
        run_as_postgres(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
    }

    /// `pg_ctl stop -m immediate`: to its clients, a crash.
    pub fn crash(&self) {
        run_as_postgres(&["pg_ctl", "-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_ctl", "-D", self.data().to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// A tmpfs of a fixed size mounted on a fresh directory (the tests run as
/// root, as `.ci/run` does): a real disk that fills up. Unmounted when
/// dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(megabytes: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs", dir.path().to_str().unwrap()])
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a small tmpfs needs root (as .ci/run runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with a file of zeros (until ENOSPC).
    pub fn fill(&self) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.filler()).expect("filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&block).and_then(|()| f.flush()) {
                assert_eq!(e.raw_os_error(), Some(28), "filling stopped for another reason: {e}");
                break;
            }
        }
        let _ = f.sync_all();
    }

    /// Makes room again.
    pub fn empty(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", self.dir.path().to_str().unwrap()]).status();
    }
}
