//! `hash:` and `btree:` tables: Berkeley DB files, through the system's
//! libdb (5.3 on Debian) and the small C shim beside this file.
//!
//! As Postfix does: a private memory-pool environment in the table's
//! directory, `DB_FCNTL_LOCKING`, `h_nelem` 4096 for hash tables, and the
//! same locks: a build rewrites the file in place under an exclusive
//! `flock` held from before the open until after the close (a zero-length
//! file is removed first: Berkeley DB will not open one), and each lookup
//! holds a shared `flock` on the database's descriptor, so a reader never
//! sees half a rebuild.

use std::path::Path;

/// Whether this build has Berkeley DB (its header was there at build time).
pub const AVAILABLE: bool = cfg!(bdb);

/// Buffer sizes, as Postfix's defaults `berkeley_db_create_buffer_size`
/// and `berkeley_db_read_buffer_size`.
#[cfg(bdb)]
const CREATE_CACHE: u32 = 16 * 1024 * 1024;
#[cfg(bdb)]
const READ_CACHE: u32 = 128 * 1024;

#[cfg(bdb)]
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    #[repr(C)]
    pub(super) struct Bdb {
        _private: [u8; 0],
    }

    extern "C" {
        pub(super) fn pfx_bdb_open(
            dir: *const c_char,
            file: *const c_char,
            hash: c_int,
            create: c_int,
            cache: c_uint,
            out: *mut *mut Bdb,
        ) -> c_int;
        pub(super) fn pfx_bdb_get(
            t: *mut Bdb,
            key: *const c_void,
            klen: c_uint,
            val: *mut *const c_void,
            vlen: *mut c_uint,
        ) -> c_int;
        pub(super) fn pfx_bdb_put(
            t: *mut Bdb,
            key: *const c_void,
            klen: c_uint,
            val: *const c_void,
            vlen: c_uint,
        ) -> c_int;
        pub(super) fn pfx_bdb_next(
            t: *mut Bdb,
            first: c_int,
            key: *mut *const c_void,
            klen: *mut c_uint,
            val: *mut *const c_void,
            vlen: *mut c_uint,
        ) -> c_int;
        pub(super) fn pfx_bdb_fd(t: *mut Bdb) -> c_int;
        pub(super) fn pfx_bdb_close(t: *mut Bdb) -> c_int;
        pub(super) fn pfx_bdb_strerror(rc: c_int) -> *const c_char;
    }
}

#[cfg(not(bdb))]
fn unavailable() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "Berkeley DB support was not built into postfix-rs (install libdb5.3-dev and rebuild)",
    )
}

/// An open Berkeley DB table.
pub struct Table {
    #[cfg(bdb)]
    raw: *mut ffi::Bdb,
}

// SAFETY: the handle is used by one thread at a time (callers hold it behind
// `&mut` or a mutex); Berkeley DB handles without DB_THREAD may move between
// threads as long as they are not used concurrently.
#[cfg(bdb)]
unsafe impl Send for Table {}

#[cfg(bdb)]
fn error(rc: std::ffi::c_int, what: &str) -> std::io::Error {
    if rc > 0 {
        return std::io::Error::from_raw_os_error(rc);
    }
    // SAFETY: db_strerror returns a static string for any code.
    let text = unsafe { std::ffi::CStr::from_ptr(ffi::pfx_bdb_strerror(rc)) };
    std::io::Error::other(format!("{what}: {}", text.to_string_lossy()))
}

#[cfg(bdb)]
fn open_raw(hash: bool, path: &Path, create: bool) -> std::io::Result<*mut ffi::Bdb> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let dir = CString::new(dir.as_os_str().as_bytes())?;
    let file = CString::new(file.as_bytes())?;
    let cache = if create { CREATE_CACHE } else { READ_CACHE };
    let mut raw = std::ptr::null_mut();
    // SAFETY: valid C strings and an out pointer; the shim frees on failure.
    let rc = unsafe {
        ffi::pfx_bdb_open(
            dir.as_ptr(),
            file.as_ptr(),
            i32::from(hash),
            i32::from(create),
            cache,
            &mut raw,
        )
    };
    if rc != 0 {
        return Err(error(rc, &format!("open database {}", path.display())));
    }
    Ok(raw)
}

#[cfg(bdb)]
impl Table {
    pub fn open(hash: bool, path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            raw: open_raw(hash, path, false)?,
        })
    }

    /// A shared lock on the database's descriptor for one access, as
    /// Postfix's readers take one.
    fn lock(&self, op: std::ffi::c_int) {
        // SAFETY: the handle is open; flock only touches its descriptor.
        unsafe {
            let fd = ffi::pfx_bdb_fd(self.raw);
            if fd >= 0 {
                libc::flock(fd, op);
            }
        }
    }

    pub fn get(&mut self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let mut val = std::ptr::null();
        let mut vlen = 0;
        self.lock(libc::LOCK_SH);
        // SAFETY: key is valid for klen bytes; val points into BDB's buffer
        // and is copied before the next call on this handle.
        let rc = unsafe {
            ffi::pfx_bdb_get(
                self.raw,
                key.as_ptr().cast(),
                key.len() as u32,
                &mut val,
                &mut vlen,
            )
        };
        let out = match rc {
            0 => Ok(Some(
                // SAFETY: BDB returned vlen readable bytes at val.
                unsafe { std::slice::from_raw_parts(val.cast::<u8>(), vlen as usize) }.to_vec(),
            )),
            1 => Ok(None),
            rc => Err(error(rc, "lookup")),
        };
        self.lock(libc::LOCK_UN);
        out
    }

    pub fn records(&mut self) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.lock(libc::LOCK_SH);
        let mut first = 1;
        let result = loop {
            let (mut k, mut kl, mut v, mut vl) = (std::ptr::null(), 0, std::ptr::null(), 0);
            // SAFETY: out pointers; the data is copied before the next call.
            let rc =
                unsafe { ffi::pfx_bdb_next(self.raw, first, &mut k, &mut kl, &mut v, &mut vl) };
            first = 0;
            match rc {
                0 => {
                    // SAFETY: BDB returned kl and vl readable bytes.
                    let (k, v) = unsafe {
                        (
                            std::slice::from_raw_parts(k.cast::<u8>(), kl as usize).to_vec(),
                            std::slice::from_raw_parts(v.cast::<u8>(), vl as usize).to_vec(),
                        )
                    };
                    out.push((k, v));
                }
                1 => break Ok(out),
                rc => break Err(error(rc, "sequence")),
            }
        };
        self.lock(libc::LOCK_UN);
        result
    }
}

#[cfg(bdb)]
impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: closed once, here.
        unsafe { ffi::pfx_bdb_close(self.raw) };
    }
}

#[cfg(not(bdb))]
impl Table {
    pub fn open(_hash: bool, _path: &Path) -> std::io::Result<Self> {
        Err(unavailable())
    }

    pub fn get(&mut self, _key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Err(unavailable())
    }

    pub fn records(&mut self) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Err(unavailable())
    }
}

/// Rebuilds `path` in place with `records` (already free of duplicates),
/// under an exclusive lock that readers' shared locks wait for.
#[cfg(bdb)]
pub fn build(hash: bool, path: &Path, records: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    let mut lock = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => Some(super::Flock::new(f, true)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        // Berkeley DB will not open an empty file; Postfix removes it too.
        tracing::warn!("removing zero-length database file: {}", path.display());
        std::fs::remove_file(path)?;
        lock = None;
    }
    let raw = open_raw(hash, path, true)?;
    let table = Table { raw };
    if lock.is_none() {
        lock = Some(super::Flock::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?,
            true,
        )?);
    }
    for (k, v) in records {
        // SAFETY: both slices are valid for their lengths during the call.
        let rc = unsafe {
            ffi::pfx_bdb_put(
                table.raw,
                k.as_ptr().cast(),
                k.len() as u32,
                v.as_ptr().cast(),
                v.len() as u32,
            )
        };
        if rc != 0 && rc != 1 {
            return Err(error(rc, &format!("update {}", path.display())));
        }
    }
    let raw = table.raw;
    std::mem::forget(table);
    // SAFETY: the handle is closed once, here (not by Drop).
    let rc = unsafe { ffi::pfx_bdb_close(raw) };
    drop(lock);
    if rc != 0 {
        return Err(error(rc, &format!("close {}", path.display())));
    }
    Ok(())
}

#[cfg(not(bdb))]
pub fn build(_hash: bool, _path: &Path, _records: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    Err(unavailable())
}
