//! Test support: a directory updated exactly the way the kubelet updates a Secret volume.
//!
//! Enabled with the `test-util` feature; used by this crate's tests and by the integration tests
//! of both binaries, so every reload test exercises the same swap sequence.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A Secret volume directory: `..data -> ..<timestamp>/`, and `name -> ..data/name` per file.
#[derive(Debug)]
pub struct SecretDir {
    root: PathBuf,
    generation: AtomicU64,
}

impl SecretDir {
    /// Uses `root` (which must exist) as the mount point. Nothing is written until [`Self::swap`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Publishes a new set of files the way the kubelet's AtomicWriter does: write a new
    /// timestamped directory, point a `..data_tmp` symlink at it, rename that over `..data`, create
    /// the per-file symlinks on first use, then delete the previous directory.
    pub fn swap(&self, files: &[(&str, &[u8])]) -> io::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let dir_name = format!("..2026_01_01_00_00_{:02}.{generation:09}", generation % 60);
        let new_dir = self.root.join(&dir_name);
        std::fs::create_dir(&new_dir)?;
        for (name, contents) in files {
            std::fs::write(new_dir.join(name), contents)?;
        }
        let data = self.root.join("..data");
        let previous = std::fs::read_link(&data).ok();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&dir_name, &tmp)?;
        std::fs::rename(&tmp, &data)?;
        for (name, _) in files {
            let link = self.root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.root.join(previous))?;
        }
        Ok(())
    }
}
