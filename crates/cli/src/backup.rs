//! `tocsin backup FILE`: a consistent copy of a SQLite database, taken
//! while the server runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::serve::DbArgs;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (a new file). Restoring is starting the server with --database sqlite://FILE.
    file: PathBuf,
    #[command(flatten)]
    db: DbArgs,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<ExitCode> {
    // As it is: a backup copies, it never creates or migrates a database.
    let store = tocsin_store::SqlStore::connect_as_is(&args.db.database, args.db.timeout()?)
        .await
        .with_context(|| format!("opening the database to back up, {}", args.db.database))?;
    let started = std::time::Instant::now();
    store.backup_to(&args.file).await?;
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    println!("backed up to {} ({size} bytes, {:.1} s)", args.file.display(), started.elapsed().as_secs_f64());
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
