//! A ConfigMap volume as kubelet writes it, for reload tests.
//!
//! kubelet's atomic writer keeps each version in a timestamped directory `..VERSION`, points the symlink
//! `..data` at the current one, and exposes each key as a symlink `KEY -> ..data/KEY`. An update writes the
//! new version's directory, creates `..data_tmp -> ..NEW`, renames it over `..data` (the one atomic step),
//! then deletes the old directory. [`KubeletMount::swap`] does exactly that.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A ConfigMap volume holding one key, `jobs.yaml`.
pub struct KubeletMount {
    dir: PathBuf,
    version: u32,
}

impl KubeletMount {
    /// Creates the volume in `dir` (which must exist) with `text` as the first version.
    pub fn new(dir: &Path, text: &str) -> KubeletMount {
        let mut mount = KubeletMount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        let first = mount.write_version(text);
        symlink(&first, dir.join("..data")).expect("create ..data");
        symlink("..data/jobs.yaml", mount.path()).expect("create the key's symlink");
        mount
    }

    /// The path the pod sees: `DIR/jobs.yaml`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("jobs.yaml")
    }

    /// Makes `text` the current version, atomically, as kubelet does; returns the instant the new version
    /// became visible (the rename returned).
    pub fn swap(&mut self, text: &str) -> std::time::Instant {
        let old = self.version_dir(self.version);
        let new = self.write_version(text);
        let tmp = self.dir.join("..data_tmp");
        symlink(&new, &tmp).expect("create ..data_tmp");
        fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        let visible = std::time::Instant::now();
        fs::remove_dir_all(self.dir.join(old)).expect("remove the old version");
        visible
    }

    fn version_dir(&self, version: u32) -> String {
        format!("..2026_11_21_00_00_00.{version:06}")
    }

    /// Writes the next version's directory; returns its name (relative, as kubelet's symlinks are).
    fn write_version(&mut self, text: &str) -> String {
        self.version += 1;
        let name = self.version_dir(self.version);
        let path = self.dir.join(&name);
        fs::create_dir(&path).expect("create the version directory");
        fs::write(path.join("jobs.yaml"), text).expect("write the version");
        name
    }
}
