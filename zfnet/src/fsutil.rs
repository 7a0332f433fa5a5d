//! Writing files so that a reader never sees half of one: write a uniquely named temporary file
//! beside the target, flush it to disk, then rename it over the target (atomic on POSIX).
//! Concurrent writers of the same path each use their own temporary file; the last rename wins
//! and every version is whole.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A temporary name beside `path`, unique to this process and call.
pub fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id()))
}

/// Writes `bytes` to `path` atomically (creating its folder), synced to disk before the rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = temp_path(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Flushes a written file to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// Moves a finished temporary file (from [`temp_path`]) over `path`, syncing it first.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    sync_file(tmp)?;
    std::fs::rename(tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_never_collide_or_leave_partial_files() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("zfvis-fsutil-{}", std::process::id()));
        let path = dir.join("a.png");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || write_atomic(path, &vec![i; 100_000]));
            }
        });
        let bytes = std::fs::read(&path)?;
        assert_eq!(bytes.len(), 100_000);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "mixed writers");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
