//! Writing files so that a crash or a full disk leaves the old file or the new one in place,
//! never a part of one (docs/training.md, "Outputs").

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` beside `path`, syncs them, renames them over `path` and syncs the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    rename(&tmp, path)?;
    sync_folder(dir)
}

/// Creates `path` with `bytes` and waits until they are on disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
}

/// Makes the folder's renames durable (a no-op where folders cannot be opened, as on Windows).
pub fn sync_folder(dir: &Path) -> Result<()> {
    match std::fs::File::open(dir) {
        Ok(folder) => folder
            .sync_all()
            .or_else(|e| if cfg!(windows) { Ok(()) } else { Err(e) })
            .with_context(|| format!("cannot sync {}", dir.display())),
        Err(_) if cfg!(windows) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", dir.display())),
    }
}
