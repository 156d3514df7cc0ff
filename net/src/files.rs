//! Secret files: written with mode 0600, refused when readable by group or others.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::NetError;

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Create `path` with mode 0600 and write `bytes`; fails if it already exists.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(file_err(path))?;
    f.write_all(bytes).map_err(file_err(path))?;
    f.sync_all().map_err(file_err(path))
}

/// Write `bytes` to `path` with mode 0600, replacing what is there at once (a new file
/// renamed over the old one: a crash leaves the old or the new, never half of either).
pub fn replace_secret(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    write_secret(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(file_err(path))
}

/// Read a secret file, refusing it if group or others may read or write it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, NetError> {
    let meta = fs::metadata(path).map_err(file_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read(path).map_err(file_err(path))
}

/// Read a 32-byte secret key file.
pub fn read_key32(path: &Path) -> Result<[u8; 32], NetError> {
    let bytes = read_secret(path)?;
    bytes.try_into().map_err(|v: Vec<u8>| NetError::BadFile {
        path: path.to_path_buf(),
        reason: format!("{} bytes, expected a 32-byte key", v.len()),
    })
}

/// Write a public (non-secret) file.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    fs::write(path, bytes).map_err(file_err(path))
}

/// Read a public file.
pub fn read_public(path: &Path) -> Result<Vec<u8>, NetError> {
    fs::read(path).map_err(file_err(path))
}
